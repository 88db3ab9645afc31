"""Request and response bodies, named by purpose: XCreate, XUpdate, XRead, Page[X]."""
