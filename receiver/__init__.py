"""The reference central side of uplink-v1: verifies, stores and acks what branch agents send.

It imports only wire/ (the spec: COSE, CBOR, kinds, acks, commands, topics) and core/, never
the agent, so the centre installs on its own (`pip install ./centre`).

Map of the package (one job per module):
  config   typed TOML config (`[receiver]`, `[[devices]]`)
  keys     the central signing key and the registry of device public keys
  db       SQLite connection and schema (WAL, synchronous=FULL, one writer)
  writer   the write side: chain state per device, idempotent record storage, rejections
  store    the read side (ReceiverStore) used by the CLI, the tests and the demo
  media    chunk spool and reassembly of clips and snapshots
  mqtt     the paho-mqtt 2.x link: persistent MQTT 5 session, SUBACK/PUBACK checks, manual acks
  server   Receiver: wires the above into one worker thread
  cli      `coop-receiver`
"""
