// QEMU, unix sockets, /proc and file modes: the microVM runtime is a Linux host feature.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
