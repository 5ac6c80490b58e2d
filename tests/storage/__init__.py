"""Tests of the storage layer's own modules (packs, Merkle identities)."""
