# Install rules and the CMake package config (filled in below).
