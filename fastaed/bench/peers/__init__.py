"""Peer engines run in their own virtual environments (driven through files, never imported)."""

# faster-whisper (issue 14): the client lives in peers/whisper.py; these names are its public face.
from fastaed.bench.peers.whisper import PeerError, run_whisper_peer, whisper_peer_python

__all__ = ["PeerError", "run_whisper_peer", "whisper_peer_python"]
