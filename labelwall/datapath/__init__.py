"""Everything that touches BPF: ABI mirror, loader, map writer/reader, tc attach."""
