"""labkit: nested, AHV-like Nutanix nodes built from OVS, libvirt and network namespaces."""

__version__ = "0.1.0"
