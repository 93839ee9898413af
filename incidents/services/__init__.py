"""Use-cases of the register, without request state: each takes explicit collaborators."""
