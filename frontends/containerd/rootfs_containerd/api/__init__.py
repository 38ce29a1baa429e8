"""Protobuf and gRPC modules generated from the .proto files here (generate_protos.py)."""
