"""Neural-network building blocks shared by molgen's generators (equivariant layers, backbones)."""
