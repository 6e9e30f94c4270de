"""rosbag2 reading and writing with the rosbags library (no rclpy).

topics (the bag layout and its constants), typestore (message types, CDR, the rosbags message
factory), qos (offered QoS profiles), writer (BagWriter), reader (BagReader, numpy payloads).
"""
