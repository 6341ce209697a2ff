"""Floor 1: the small shared primitives every other package may import; it imports none of ours.

  interfaces     Component, Health, the record sinks and the buffer's errors (RecordRejected ...)
  config.base    the config models' base (Section), secrets, broker URL and topic prefix fields
  config.errors  config errors as 'key = value: what is allowed', for the agent and the receiver
  auth           the local API's bearer token: load it, compare it in constant time
"""
