"""uplink-v1, the spec (../shared/spec/uplink-v1.md), in code: what the agent, its buffer and the
receiver must agree on byte for byte. Floor 2: it imports core/ (the record errors) and
nothing else of ours, so the centre installs it without the agent (coop-centre).

  kinds          a record's envelope and the kinds of version 1: the one table
  records        a record's checks: the envelope and each kind's data (normalize_records)
  batches        a received batch's or status's checks (signature, dev, fields, encoding, records, media)
  cose           deterministic CBOR (RFC 8949 4.2.1), COSE_Sign1 sign/verify, kid, the Signer
  sign1          the receiver's one-decode open of an inbound COSE_Sign1
  deterministic  is a received payload in deterministic encoding?
  keys           Ed25519 key files (PKCS#8 PEM, 0600)
  messages       acks and commands (central -> agent): build and check
  topics         topic names, both ways
"""
