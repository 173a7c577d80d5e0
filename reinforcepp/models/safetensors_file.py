"""Is a .safetensors file whole? Checked before loading, so a truncated or empty file is named in one line
instead of surfacing as a deserialization error deep inside transformers or safetensors."""

from __future__ import annotations

import json
from pathlib import Path

_HEADER_LEN_BYTES = 8  # a safetensors file starts with its JSON header's length, little-endian u64


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (empty, truncated, unreadable header), or None."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return f"{path}: empty file (0 bytes), not a safetensors file"
    with path.open("rb") as f:
        head = f.read(_HEADER_LEN_BYTES)
        header_len = int.from_bytes(head, "little")
        if len(head) < _HEADER_LEN_BYTES or _HEADER_LEN_BYTES + header_len > size:
            return f"{path}: truncated ({size} bytes), not a whole safetensors file"
        try:
            header = json.loads(f.read(header_len))
            data_end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"),
                           default=0)
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            return f"{path}: damaged header, not a safetensors file"
    needed = _HEADER_LEN_BYTES + header_len + data_end
    if needed > size:
        return f"{path}: truncated ({size} of {needed} bytes)"
    return None
