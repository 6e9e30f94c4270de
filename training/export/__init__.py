"""Exports: rosbag2 from chunks, ONNX graphs."""
