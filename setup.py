"""subscriber-backfill: Decree 25 supplementary real-name registration on Apache Beam.

This file is also what Dataflow workers install (``--setup_file ./setup.py``).
Our top-level packages have generic names (``schemas``, ``transforms``,
``pipelines``), so they are listed explicitly rather than found.
"""

import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "pipelines", "__init__.py"), encoding="utf-8") as f:
    # One version: ``backfill --version`` prints it (installed: the package metadata; a checkout: the constant).
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

INSTALL_REQUIRES = [
    # Pinned together: this set is installed and tested as one (constraints.txt).
    "apache-beam[gcp,aws]==2.77.0",  # aws: Beam's S3 file system (s3://, any S3-compatible store)
    "boto3==1.44.18",  # the AWS KMS API (aws-kms:// key-encryption keys)
    "google-cloud-kms==3.18.0",  # Cloud KMS (gcp-kms:// key-encryption keys)
    "pyarrow==25.0.1",
    "fastavro==1.13.1",
    "cryptography==50.0.2",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "PyYAML==6.0.4",
    "jsonschema==4.26.0",
    "Jinja2==3.1.6",
    "matplotlib==3.11.2",
    "phonenumbers==9.0.43",
    "pycountry==26.2.16",  # ISO 3166-1 (GB/T 2659) of the code tables (docs/policy.md "Code tables")
    "python-stdnum==2.2",  # its GB/T 2260 table (stdnum/cn/loc.dat), measured in docs/regulation.md §2.8
    "google-cloud-pubsub==2.44.0",
    "psutil==7.2.2",
]

setup(
    name="subscriber-backfill",
    version=VERSION,
    description="Decree 25 supplementary real-name registration backfill on Apache Beam",
    python_requires=">=3.10",
    # What workers install. The developer tools in dev/ (generate, simulate,
    # demo, the emulator launcher) are not in it: the Makefile puts the
    # checkout on the virtual environment's path for them.
    # pipelines.render.templates holds only the pages' Jinja templates; it is listed as a package (of data)
    # because setuptools would otherwise warn, at every install, that it "would be ignored".
    packages=[
        "schemas",
        "transforms",
        "transforms.core",
        "transforms.scan",
        "transforms.crypto",
        "transforms.merge",
        "transforms.notify",
        "transforms.compliance",
        "pipelines",
        "pipelines.io",
        "pipelines.render",
        "pipelines.render.templates",
    ],
    package_data={"schemas": ["*.avsc", "*.yaml", "*.json", "*.csv"], "pipelines.render.templates": ["*.j2"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",
            "duckdb==2.0.1",
            "selenium==4.45.0",
            "ruff==0.14.8",
            "moto[server]==5.2.6",
        ],
    },
    entry_points={"console_scripts": ["backfill=pipelines.cli:main"]},
)
