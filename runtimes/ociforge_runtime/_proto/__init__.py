"""Generated protobuf messages of the Open Inference Protocol v2 gRPC API.

``grpc_predict_v2.proto`` is KServe's (https://github.com/kserve/kserve,
``python/kserve/kserve/protocol/grpc/grpc_predict_v2.proto``, Apache License 2.0, header kept in
the file). ``grpc_predict_v2_pb2.py`` is generated from it, never edited by hand::

    python -m pip install grpcio-tools==1.76.0
    cd runtimes/ociforge_runtime/_proto && python -m grpc_tools.protoc -I. --python_out=. grpc_predict_v2.proto

(protobuf gencode 6.31.1: the image needs protobuf >= 6.31.1, < 7; ``ociforge build --grpc``
installs it with grpcio.) Imported only by ``grpc_server``, only when gRPC is enabled.
"""
