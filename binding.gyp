{
  "variables": {
    # The benchmark's own targets (native_echo, standalone_echo, loadgen) are built only where bench/ is: it is not
    # published, so a source install from the npm tarball builds the addon alone; and prebuilds
    # carry only twinloop.node (scripts/prebuild.sh sets npm_config_twinloop_bench=0, which is
    # node-gyp's --twinloop_bench=0). And only on Linux, where the load generator runs.
    "twinloop_bench%": "<!(node -p \"+require('fs').existsSync('bench/loadgen/loadgen.cc')\")",
    # Where a kqueue emulation is installed, to build the kqueue backend on Linux as well: the
    # addon and the benchmark's C++ echoes alike, so that every backend the addon has has its
    # native ceiling too. node-gyp rebuild -- -Dtwinloop_kqueue_prefix=/path/to/prefix, with the
    # emulation's include/kqueue/sys/event.h and lib/libkqueue.* under it.
    # (Defined in an inner dict first, so that the conditions below can test it: gyp evaluates a
    # dict's conditions before its own defaults.)
    "variables": { "twinloop_kqueue_prefix%": "" },
    "twinloop_kqueue_prefix%": "<(twinloop_kqueue_prefix)",
    "kqueue_emulation_sources": [],
    "kqueue_emulation_include_dirs": [],
    "kqueue_emulation_libraries": [],
    # The native sources, listed once in native/sources.json (CMakeLists.txt reads the same file):
    # the core and the addon's binding, then for each OS the watcher of the backend's descriptor
    # and the backends, shared by the addon and the benchmark's native echo. A new backend is one
    # line there.
    "core_sources": ["<!@(node -p \"require('./native/sources.json').core.join(' ')\")"],
    "addon_sources": ["<!@(node -p \"require('./native/sources.json').addon.join(' ')\")"],
    "conditions": [
      ["OS=='linux'", {
        "watcher_sources": ["<!@(node -p \"require('./native/sources.json').watcher.posix.join(' ')\")"],
        "backend_sources": ["<!@(node -p \"require('./native/sources.json').backends.linux.join(' ')\")"]
      }],
      ["OS=='linux' and twinloop_kqueue_prefix!=''", {
        "kqueue_emulation_sources": ["native/backends/kqueue.cc"],
        "kqueue_emulation_include_dirs": ["<(twinloop_kqueue_prefix)/include/kqueue"],
        "kqueue_emulation_libraries": ["-L<(twinloop_kqueue_prefix)/lib", "-lkqueue", "-Wl,-rpath,<(twinloop_kqueue_prefix)/lib"]
      }],
      ["OS=='mac' or OS=='freebsd'", {
        "watcher_sources": ["<!@(node -p \"require('./native/sources.json').watcher.posix.join(' ')\")"],
        "backend_sources": ["<!@(node -p \"require('./native/sources.json').backends.bsd.join(' ')\")"]
      }],
      # Windows: the IOCP backend, woken through a thread-safe function instead of libuv handles
      # (native/binding/loop_watcher.h).
      ["OS=='win'", {
        "watcher_sources": ["<!@(node -p \"require('./native/sources.json').watcher.win.join(' ')\")"],
        "backend_sources": ["<!@(node -p \"require('./native/sources.json').backends.win.join(' ')\")"]
      }]
    ]
  },
  "targets": [
    {
      "target_name": "twinloop",
      "sources": ["<@(core_sources)", "<@(addon_sources)", "<@(watcher_sources)", "<@(backend_sources)", "<@(kqueue_emulation_sources)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<@(kqueue_emulation_include_dirs)"],
      "libraries": ["<@(kqueue_emulation_libraries)"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=c++17"],
      "cflags_cc": ["-std=c++20", "-fno-exceptions", "-Wall", "-Wextra", "-Werror"],
      "conditions": [
        ["OS=='mac'", {
          # On macOS node-gyp takes the compiler flags from xcode_settings, not from cflags_cc.
          "xcode_settings": {
            "CLANG_CXX_LANGUAGE_STANDARD": "c++20",
            "CLANG_CXX_LIBRARY": "libc++",
            "GCC_ENABLE_CPP_EXCEPTIONS": "NO",
            "MACOSX_DEPLOYMENT_TARGET": "10.15",
            "OTHER_CPLUSPLUSFLAGS": ["-Wall", "-Wextra", "-Werror"]
          }
        }],
        # Windows (CMakeLists.txt cross-builds the same sources with MinGW).
        ["OS=='win'", {
          "defines": ["WIN32_LEAN_AND_MEAN", "NOMINMAX", "_WIN32_WINNT=0x0A00"],
          "libraries": ["ws2_32.lib"],
          "msvs_settings": {
            "VCCLCompilerTool": {
              "AdditionalOptions": ["/std:c++20", "/utf-8"],
              "WarningLevel": 4,
              "WarnAsError": "true"
            }
          }
        }]
      ]
    }
  ],
  "conditions": [
    ["twinloop_bench==1 and OS=='linux'", {
      "targets": [
        {
          "target_name": "native_echo",
          "target_conditions": [["_type=='loadable_module'", {"product_extension": "so"}]],
          "sources": ["<@(core_sources)", "native/binding/native_echo.cc", "<@(backend_sources)", "<@(kqueue_emulation_sources)"],
          "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<@(kqueue_emulation_include_dirs)"],
          "libraries": ["<@(kqueue_emulation_libraries)"],
          "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
          "cflags!": ["-fno-exceptions"],
          "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=c++17"],
          "cflags_cc": ["-std=c++20", "-fno-exceptions", "-Wall", "-Wextra", "-Werror"]
        },
        {
          "target_name": "standalone_echo",
          "type": "executable",
          "sources": ["<@(core_sources)", "native/binding/standalone_echo.cc", "<@(backend_sources)", "<@(kqueue_emulation_sources)"],
          "include_dirs": ["<@(kqueue_emulation_include_dirs)"],
          "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=c++17"],
          "cflags_cc": ["-std=c++20", "-O2", "-fno-exceptions", "-Wall", "-Wextra", "-Werror"],
          "libraries": ["-pthread", "<@(kqueue_emulation_libraries)"]
        },
        {
          "target_name": "loadgen",
          "type": "executable",
          "sources": ["bench/loadgen/loadgen.cc"],
          "cflags_cc!": ["-std=gnu++17", "-std=c++17"],
          "cflags_cc": ["-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror"]
        }
      ]
    }]
  ]
}
