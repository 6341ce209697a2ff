"""Evidence at the centre: export a set of stored records as an evidence bundle (docs/evidence-bundle-v1.md).

  export   export_bundle: the records' signed batches, the chain segment, their clips, the device
           keys and the manifest signed by the centre, into one ZIP (wire.bundle writes it)
  keys     device_keys: the one place the export reads a device's registered keys
"""
