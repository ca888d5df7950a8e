"""Generic helpers that know nothing of stereo: typed YAML configs, atomic file writes, resumable downloads."""
