"""Generic machinery for adapters to upstream CAs; plugin authors import it through
:mod:`est_gateway.plugin` (and :mod:`est_gateway.plugin.http`), never from here."""
