//go:build fault && linux

// Command vminit is the init process of the power-cut test's virtual
// machine. The test packs it as /init into an initramfs beside the herald
// binary and the kernel modules the machine needs. It mounts the kernel's
// file systems, loads the modules in the order /modules.order lists them,
// mounts the virtual disk /dev/vda (ext4) on /data, brings up eth0 with
// QEMU's user-network address, and then becomes `herald serve` with the
// arguments in /args, one per line.
//
// Nothing is unmounted or synced on the way down: the test ends the machine
// by killing QEMU, which is a power cut for everything inside.
package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "vminit: %v\n", err)
		// PID 1 exiting panics the kernel; with panic=-1 and QEMU's
		// -no-reboot the machine stops and the test sees why.
		os.Exit(1)
	}
}

func run() error {
	for _, m := range []struct{ src, dir, fs string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dir, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	if err := loadModules("/modules.order"); err != nil {
		return err
	}
	if err := waitFile("/dev/vda", 30*time.Second); err != nil {
		return err
	}
	if err := unix.Mount("/dev/vda", "/data", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount /dev/vda on /data: %w", err)
	}
	if err := ifUp("lo", nil); err != nil {
		return err
	}
	if err := waitFile("/sys/class/net/eth0", 30*time.Second); err != nil {
		return err
	}
	if err := ifUp("eth0", &net.IPNet{IP: net.IPv4(10, 0, 2, 15), Mask: net.CIDRMask(24, 32)}); err != nil {
		return err
	}
	raw, err := os.ReadFile("/args")
	if err != nil {
		return err
	}
	args := append([]string{"/herald"}, strings.Fields(string(raw))...)
	fmt.Printf("vminit: exec %s\n", strings.Join(args, " "))
	env := []string{"HOME=/data", "TMPDIR=/tmp", "PATH=/"}
	return syscall.Exec("/herald", args, env)
}

// loadModules loads each module file listed in order (one path per line).
func loadModules(order string) error {
	raw, err := os.ReadFile(order)
	if err != nil {
		return err
	}
	for _, path := range strings.Fields(string(raw)) {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("load module %s: %w", path, err)
		}
	}
	return nil
}

// waitFile waits until path exists: devices and interfaces appear a
// moment after their driver loads.
func waitFile(path string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ifUp gives the interface name the address addr (if not nil) and brings
// it up.
func ifUp(name string, addr *net.IPNet) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if addr != nil {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(addr.IP.To4()); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
			return fmt.Errorf("%s: set address: %w", name, err)
		}
		if err := ifr.SetInet4Addr(net.IP(addr.Mask).To4()); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
			return fmt.Errorf("%s: set netmask: %w", name, err)
		}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: get flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: bring up: %w", name, err)
	}
	return nil
}
