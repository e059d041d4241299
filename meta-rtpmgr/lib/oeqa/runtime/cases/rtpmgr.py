# SPDX-License-Identifier: MIT
"""rtpmgr on the booted image (testimage): the module, its device node, the
daemon's user and state, the device-tree-bound media port, and an RTP
stream sent from the build host into the image coming back intact through
rtpmgrd and the media port.

Enabled by TEST_SUITES += "rtpmgr" (docs/yocto.md has the command). The
stream test needs qemu's user network with the image's forwarding of host
UDP 5004 to the guest (rtpmgr-image's QB_SLIRP_OPT): TEST_RUNQEMUPARAMS =
"slirp", and the qemuarm64 configuration (conf/rtpmgr-qemuarm64.toml),
which relays 5004 to the host's 5006 through media0.
"""
import socket
import struct
import time

from oeqa.core.decorator.depends import OETestDepends
from oeqa.core.decorator.data import skipIfNotDataVar
from oeqa.runtime.case import OERuntimeTestCase
from oeqa.runtime.decorator.package import OEHasPackage

# What conf/rtpmgr-qemuarm64.toml's relay stream "tv1" receives and sends.
HOST_SEND_PORT = 5004
HOST_RECV_PORT = 5006
PT_MP2T = 33
TS_PACKETS = 7
PACKETS = 500


def rtp_packet(seq):
    """RTP (RFC 3550) version 2, MPEG-TS payload: seven 188-byte TS packets,
    each with the sync byte and the sequence number in the payload so that
    every datagram is distinct."""
    header = struct.pack("!BBHII", 0x80, PT_MP2T, seq & 0xFFFF, seq * 3003, 0x52544D47)
    ts = bytes([0x47]) + struct.pack("!I", seq) + bytes(183)
    return header + ts * TS_PACKETS


class RtpmgrTest(OERuntimeTestCase):

    @OEHasPackage(["kernel-module-rtpmgr"])
    def test_module_loaded(self):
        status, output = self.target.run("grep '^rtpmgr ' /proc/modules")
        self.assertEqual(status, 0, "rtpmgr.ko is not loaded at boot:\n" + output)

    @OETestDepends(["rtpmgr.RtpmgrTest.test_module_loaded"])
    def test_device_node(self):
        status, output = self.target.run("stat -c '%F %a %U %G' /dev/rtpmgr")
        self.assertEqual(status, 0, output)
        self.assertEqual(output.strip(), "character special file 660 root rtpmgr")

    @OETestDepends(["rtpmgr.RtpmgrTest.test_module_loaded"])
    def test_media_port_bound(self):
        status, output = self.target.run("ls /sys/bus/platform/drivers/rtpmgr-media-port/")
        self.assertEqual(status, 0, "the platform driver is not registered:\n" + output)
        bound = [e for e in output.split() if e not in ("bind", "unbind", "uevent", "module")]
        self.assertTrue(bound, "no device bound to rtpmgr-media-port: is the overlay applied?")

    @OEHasPackage(["rtpmgrd"])
    @OETestDepends(["rtpmgr.RtpmgrTest.test_device_node"])
    def test_daemon_running_as_rtpmgr(self):
        status, output = self.target.run("systemctl is-active rtpmgrd")
        self.assertEqual(output.strip(), "active", self.target.run("systemctl status --full rtpmgrd")[1])
        status, output = self.target.run("ps -o user= -p $(pidof rtpmgrd)")
        self.assertEqual(status, 0, output)
        self.assertEqual(output.strip(), "rtpmgr")

    @skipIfNotDataVar("MACHINE", "qemuarm64", "the stream test uses qemuarm64's relay configuration")
    @OETestDepends(["rtpmgr.RtpmgrTest.test_daemon_running_as_rtpmgr",
                    "rtpmgr.RtpmgrTest.test_media_port_bound"])
    def test_stream_round_trip(self):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sink.bind(("127.0.0.1", HOST_RECV_PORT))
        sink.settimeout(10)
        src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = {}
        received = {}
        try:
            for seq in range(PACKETS):
                sent[seq] = rtp_packet(seq)
                src.sendto(sent[seq], ("127.0.0.1", HOST_SEND_PORT))
                time.sleep(0.002)  # about 5 Mbit/s, paced as a real stream is
            while len(received) < PACKETS:
                data = sink.recv(65536)
                seq = struct.unpack("!H", data[2:4])[0]
                received[seq] = data
        except socket.timeout:
            pass
        finally:
            src.close()
            sink.close()
        missing = sorted(set(sent) - set(received))
        self.assertFalse(missing, "%d of %d packets did not come back, first %s; rtpmgrctl status:\n%s"
                         % (len(missing), PACKETS, missing[:10], self.target.run("rtpmgrctl status")[1]))
        corrupt = [s for s in sent if received[s] != sent[s]]
        self.assertFalse(corrupt, "packets changed on the way: %s" % corrupt[:10])
