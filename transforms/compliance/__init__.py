"""Compliance over Arrow tables, without Beam: the completion report (Art. 14), retention and its
purge (Art. 11) and the scope of an incident (Art. 13)."""
