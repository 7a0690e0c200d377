"""The DIMSE front end: what modalities and PACS speak (C-ECHO, C-STORE, C-FIND, C-MOVE,
C-GET, storage commitment), a thin layer over the core (vna.ingest, vna.query, vna.retrieve).
"""
