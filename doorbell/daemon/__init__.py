"""The daemon: wires source, segmenter, sealer, recorder, sensors and sinks into one service."""
