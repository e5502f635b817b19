"""An offline "internet" for tests: Debian hosts booted with systemd and plain network namespaces on Ethernet
segments (the internet, and others behind NAT routers), with an apt proxy of the test's own as their only
way out. See network.py, aptproxy.py, image.py.
"""

from tests.testnet.aptproxy import AptProxy
from tests.testnet.image import base_image
from tests.testnet.linux import leftovers, remove_stale
from tests.testnet.network import INTERNET, NetnsHost, Router, SystemHost, TestNet

__all__ = ["INTERNET", "AptProxy", "NetnsHost", "Router", "SystemHost", "TestNet", "base_image", "leftovers",
           "remove_stale"]
