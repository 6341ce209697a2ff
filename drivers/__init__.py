"""Device drivers: one package per device family, each driver a class registered by name."""
