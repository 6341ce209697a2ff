"""Real peers started by the tests: Mosquitto, RTSP servers, serial pty pairs, the agent itself."""
