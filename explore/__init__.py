"""Co-design exploration: sweep and search the joint space of compression, hardware and workload."""
