"""Cinder volumes in pods: the seed's FlexVolume driver (`cinder/flexvolume_driver`), the
node-side attach and mount of Cinder RBD volumes, and the tenant check (docs/volumes.md)."""
