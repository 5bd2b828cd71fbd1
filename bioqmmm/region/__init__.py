"""The QM region: selections, bond orders and rings, covalent boundaries (link atoms, boundary charges),
protein helpers and the validated :class:`~bioqmmm.region.region.QMRegion` value object."""
