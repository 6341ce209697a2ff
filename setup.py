"""Packaging for the cooperative branch edge agent (coopagent) and its reference receiver.

Dependency ranges are compatible-release pins: the lower bound is the oldest version we
tested the API we use against, the upper bound the next major release, which may break it.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

# One version, in agent/__init__.py: the CLI, the status document and the Debian package read it there.
VERSION = re.search(r'^__version__ = "([^"]+)"$', (Path(__file__).parent / "agent" / "__init__.py").read_text(),
                    re.M).group(1)  # type: ignore[union-attr]

setup(
    name="coopagent",
    version=VERSION,
    description="Branch edge agent: durable, signed, hash-chained uplink of stock, sales and camera evidence",
    python_requires=">=3.11",
    packages=find_packages(include=["core*", "wire*", "agent*", "buffer*", "drivers*", "receiver*", "coopverify*"]),
    package_data={"agent": ["py.typed"], "": ["*.sql", "*.toml", "*.yml"], "receiver.web": ["templates/*.html", "static/*"]},
    install_requires=[
        "paho-mqtt>=2.1,<3",
        "cryptography>=42,<51",
        "cbor2>=5.6,<7",
        "libipld>=3.5,<4",  # Rust DAG-CBOR encoder: deterministic CBOR of a record in 1 us, not 9.5 (wire.cose)
        "pydantic>=2.7,<3",
        "click>=8.1,<9",
        "fastapi>=0.110,<1",
        "uvicorn[standard]>=0.29,<1",
        "orjson>=3.9,<4",
        "typing_extensions>=4.6",
        "uvloop>=0.19,<1; sys_platform != 'win32'",
        "prometheus-client>=0.20,<1",
        "pyserial>=3.5,<4",
        "biip>=5,<6",
        "opencv-python-headless>=4.9,<6",
        "onvif-zeep-async>=3.1,<5",
        "ifaddr>=0.2,<1",  # this PC's IPv4 addresses for the WS-Discovery probe (drivers/camera/discovery.py)
        "numpy>=1.26,<3",  # frame statistics for tamper and motion (imported directly)
        "uuid6>=2024.1",
        "reportlab>=4,<6",
        "rlPyCairo>=0.4,<1",  # reportlab 5's only PNG backend (barcode sheets); builds pycairo
        "tomli-w>=1.0,<2",
        "psycopg[binary]>=3.2,<4",  # the receiver's PostgreSQL store (binary COPY); SQLite stays the default
        "jinja2>=3.1,<4",  # the centre's evidence view: server-rendered pages (receiver/web)
        "python-multipart>=0.0.9,<1",  # its HTML forms (FastAPI's form parsing)
        "argon2-cffi>=23.1,<26",  # its account passwords (argon2id)
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "hypothesis>=6.100,<7",
            "httpx>=0.27,<1",
            "mypy>=1.10,<3",
            "ruff>=0.5,<1",
            "schemathesis>=4.32,<5",  # property-based fuzzing of /openapi.json (tests/api/test_openapi_fuzz.py)
            "selenium>=4.20,<5",  # the status page in headless chromium (tests/page)
        ],
    },
    entry_points={
        "console_scripts": [
            "coopagent=agent.cli.main:main",
            "coop-receiver=receiver.cli:main",
            "coop-verify=coopverify.cli:entry",
        ],
    },
)
