{
  "targets": [
    {
      "target_name": "twinloop",
      "sources": [
        "native/core/registry.cc",
        "native/binding/addon.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=c++17"],
      "cflags_cc": ["-std=c++20", "-fno-exceptions", "-Wall", "-Wextra", "-Werror"],
      "conditions": [
        ["OS=='linux'", {
          "sources": [
            "native/backends/posix_socket.cc",
            "native/backends/epoll.cc"
          ]
        }]
      ]
    },
    {
      "target_name": "loadgen",
      "type": "executable",
      "sources": ["bench/loadgen/loadgen.cc"],
      "cflags_cc!": ["-std=gnu++17", "-std=c++17"],
      "cflags_cc": ["-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror"],
      "conditions": [["OS!='linux'", {"type": "none", "sources!": ["bench/loadgen/loadgen.cc"]}]]
    }
  ]
}
