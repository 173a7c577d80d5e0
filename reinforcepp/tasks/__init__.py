"""Offline tasks with verifiable answers: puzzle generators and their datasets."""
