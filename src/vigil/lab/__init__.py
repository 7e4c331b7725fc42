"""The lab: real Debian guests under QEMU, with the guest sensor inside, attacked over the network.

``image`` builds and caches the guest image, ``qemu`` boots and stops VMs, ``fleet`` registers
them with a server and keeps the lab's run state, ``attack`` plays the paper's case study against
a VM and records what it did. The lab is for showing and testing Vigil; its guests carry
deliberate weaknesses (``docs/lab.md``) and must never face a real network.
"""
