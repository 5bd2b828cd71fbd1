"""The QM/MM model: system surgery, embedding (near field, Ewald far field), the QM force and
:class:`~bioqmmm.qmmm.system.QMMMSystem`."""
