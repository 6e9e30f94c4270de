"""ROS-free core: geometry, cameras, labels, the network, decoding, checkpoints, inference, tracking, synchronisation."""
