"""Store-and-forward to the centre over MQTT: batches, media chunks, status; acks and commands back."""
