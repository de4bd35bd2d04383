"""The attention engine's contract: parameters and their checks, widths, pipeline depths, golden datapath, cycles."""
