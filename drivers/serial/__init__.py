"""Serial devices: barcode scanners and scales (issue 3).

agent.config imports this package's config models, and they import agent.config.base; importing
agent.config first makes either import order work (otherwise `import drivers.serial.config`
before `agent.config` would meet a half-initialised module).
"""

import agent.config  # noqa: F401
