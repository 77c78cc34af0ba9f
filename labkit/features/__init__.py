"""What labkit does on the host beyond the adapters (labkit/host/: one system each), built on them:
preflight (what the host allows), services (starting OVS and libvirt), verifier (probes from
inside the guests), console (a guest's serial console), disks (overlays and cloud-init seeds)."""
