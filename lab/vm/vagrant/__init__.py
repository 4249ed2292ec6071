"""The Vagrant backend: the same lab through vagrant-libvirt, its box and host side."""
