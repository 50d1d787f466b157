from .reference import selective_scan
