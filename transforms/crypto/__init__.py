"""Keys and sealing: the keyset of join and vault keys, join tokens and display masks of identity
values, envelope encryption, and the identity vault that keeps the original values per line."""
