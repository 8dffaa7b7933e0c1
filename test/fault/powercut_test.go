//go:build fault && powercut && linux

package fault

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/netport"
)

// The power-cut test runs `herald serve` inside a QEMU virtual machine
// whose data dir is on a virtual disk that QEMU writes with cache=none
// (O_DIRECT on the host: what the guest wrote out is on the host's disk,
// what it kept in its page cache is not). Killing QEMU with SIGKILL is a
// power cut for everything inside: the guest kernel's page cache, its
// dirty ext4 metadata and the process go at once. Clients on the host
// reach the server through QEMU's port forwards.
//
// It needs qemu-system-x86_64, mkfs.ext4 and a Linux kernel with its
// modules (HERALD_VM_ROOT/boot/vmlinuz-VERSION and
// HERALD_VM_ROOT/lib/modules/VERSION; HERALD_VM_ROOT defaults to /). On
// Debian without a kernel installed (a container), unpack one:
//
//	apt-get install qemu-system-x86 e2fsprogs
//	apt-get download linux-image-6.1.0-57-amd64
//	dpkg-deb -x linux-image-6.1.0-57-amd64_*.deb /tmp/vmroot
//	HERALD_VM_ROOT=/tmp/vmroot go test -tags fault,powercut -run TestPowerCut -count=1 -timeout 60m ./test/fault/
//
// With /dev/kvm, if a probe machine boots under it, the machine runs under
// KVM; otherwise under QEMU's software emulation, which is slower but cuts
// power the same way. HERALD_VM_ACCEL=tcg or kvm chooses without a probe.

// TestPowerCutSyncLosesNoAckedEvent cuts the machine's power at random
// moments under load, HERALD_POWERCUT_CYCLES times (default 20), with
// `--durability sync`: every confirmed event must be there afterwards.
func TestPowerCutSyncLosesNoAckedEvent(t *testing.T) {
	cycles := envInt(t, "HERALD_POWERCUT_CYCLES", 20)
	vm := startVM(t, "sync", "")
	sum, window := killCycles(t, vm, cycles, 500*time.Millisecond, 5*time.Second, true)
	sum.LossWindowMS = ms(window)
	report(t, sum)
	if sum.Lost > 0 {
		t.Fatalf("%d of %d acked events lost over %d power cuts", sum.Lost, sum.Acked, cycles)
	}
}

// TestPowerCutFastLossWindow measures what `--durability fast` loses to a
// power cut: confirmed events that were in the guest's page cache only.
// It fails only if nothing was confirmed; the loss count and the longest
// time between a lost event's confirmation and the cut (the loss window)
// go into the summary and docs/durability.md.
func TestPowerCutFastLossWindow(t *testing.T) {
	cycles := envInt(t, "HERALD_POWERCUT_FAST_CYCLES", 10)
	vm := startVM(t, "fast", "")
	sum, window := killCycles(t, vm, cycles, 1*time.Second, 10*time.Second, false)
	sum.LossWindowMS = ms(window)
	report(t, sum)
	t.Logf("fast: %d of %d acked events lost over %d power cuts; loss window %s", sum.Lost, sum.Acked, cycles, window.Round(time.Millisecond))
}

// TestSlowDiskSyncLosesNoAckedEvent runs the sync power-cut test on a
// disk QEMU throttles to HERALD_SLOWDISK_IOPS operations a second
// (default 100; an fsync costs a few): publishing slows down to what the
// disk takes, and still no confirmed event may be lost to the cuts
// (HERALD_SLOWDISK_CYCLES, default 5).
func TestSlowDiskSyncLosesNoAckedEvent(t *testing.T) {
	cycles := envInt(t, "HERALD_SLOWDISK_CYCLES", 5)
	iops := envInt(t, "HERALD_SLOWDISK_IOPS", 100)
	vm := startVM(t, "sync", fmt.Sprintf(",throttling.iops-total=%d", iops))
	sum, _ := killCycles(t, vm, cycles, 2*time.Second, 8*time.Second, true)
	report(t, sum)
	t.Logf("slow disk (%d IOPS): %d events confirmed in %.0f s with %d power cuts", iops, sum.Acked, sum.DurationS, cycles)
	if sum.Lost > 0 {
		t.Fatalf("%d of %d acked events lost over %d power cuts of a slow disk", sum.Lost, sum.Acked, cycles)
	}
}

// vm is a QEMU machine running `herald serve` on a virtual disk; it
// implements killTarget.
type vm struct {
	t                  *testing.T
	kernel, initrd     string
	disk               string
	driveOpts          string // appended to QEMU's -drive
	natsPort, httpPort int

	// tcg is set once KVM failed to run the machine; it then runs under
	// software emulation for the rest of the test.
	tcg bool

	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

// startVM builds the machine (initramfs, disk), boots it and waits until
// herald answers /readyz through the forwarded port. driveOpts is appended
// to the disk's -drive options (e.g. ",throttling.iops-total=100").
func startVM(t *testing.T, durability, driveOpts string) *vm {
	t.Helper()
	root := os.Getenv("HERALD_VM_ROOT")
	if root == "" {
		root = "/"
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the power-cut test needs %s (apt-get install qemu-system-x86 e2fsprogs): %v", tool, err)
		}
	}
	kernel, modDir := findKernel(t, root)
	dir := t.TempDir()

	herald := buildStatic(t, "./cmd/herald", dir)
	initBin := buildStatic(t, "./test/fault/vminit", dir)
	mods := moduleOrder(t, modDir, "virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4")

	args := fmt.Sprintf("serve --durability %s --data-dir /data/herald --nats-addr 0.0.0.0:4222 --http-addr 0.0.0.0:8080 --registry-addr 127.0.0.1:0 --insecure\n", durability)
	initrd := filepath.Join(dir, "initrd.cpio")
	writeInitramfs(t, initrd, initBin, herald, mods, args)

	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 2<<30); err != nil {
		t.Fatal(err)
	}
	// Initialise the inode tables and journal now: left lazy, the guest
	// would do it in the background under the test's load.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", disk).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}

	v := &vm{t: t, kernel: kernel, initrd: initrd, disk: disk, driveOpts: driveOpts, natsPort: freePort(t), httpPort: freePort(t)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the machine's console, last lines:\n%s", tail(v.out.String(), 6000))
		}
		v.stop()
	})
	v.start()
	return v
}

func (v *vm) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", v.natsPort) }

func (v *vm) start() {
	t := v.t
	t.Helper()
	accel := tcgAccel
	kvm := false
	if !v.tcg && kvmBoots(t, v.kernel) {
		kvm = true
		accel = kvmAccel
	}
	args := append([]string{"-machine", "q35"}, accel...)
	args = append(args,
		"-smp", "2", "-m", "1536",
		"-kernel", v.kernel, "-initrd", v.initrd,
		"-append", "console=ttyS0 panic=-1 quiet",
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-drive", "file="+v.disk+",format=raw,if=virtio,cache=none,aio=threads"+v.driveOpts,
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:4222,hostfwd=tcp:127.0.0.1:%d-:8080", v.natsPort, v.httpPort),
		"-device", "virtio-net-pci,netdev=n0",
	)
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	v.out = &lockedBuffer{}
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.out
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	v.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(v.cmd, v.exited)
	waitFor(t, 5*time.Minute, func() string {
		return "herald in the machine answered /readyz; console:\n" + tail(v.out.String(), 4000)
	}, func() bool {
		select {
		case <-v.exited:
			if kvm {
				t.Logf("the machine did not boot under KVM (%v), so it runs under software emulation; console:\n%s", v.cmd.ProcessState, tail(v.out.String(), 2000))
				v.tcg = true
				v.start()
				return true
			}
			t.Fatalf("the machine stopped: %v; console:\n%s", v.cmd.ProcessState, tail(v.out.String(), 4000))
		default:
		}
		return v.ready()
	})
}

// QEMU's accelerator options. Under KVM not "max" or a plain "host": a
// KVM that itself runs in a virtual machine may refuse the guest's
// IA32_ARCH_CAPABILITIES MSR, and QEMU then aborts at boot.
var (
	tcgAccel = []string{"-accel", "tcg,thread=multi", "-cpu", "max"}
	kvmAccel = []string{"-accel", "kvm", "-cpu", "host,-arch-capabilities"}
)

var kvmProbe struct {
	once sync.Once
	ok   bool
}

// kvmBoots reports whether a machine boots under KVM here, found out once
// per test process: /dev/kvm must open and the kernel must print its
// banner on the serial console within 30 s. A nested KVM can accept the
// machine and then run nothing (seen: no console output at all), which
// would otherwise look like a server that never gets ready.
// HERALD_VM_ACCEL=tcg or kvm skips the probe.
func kvmBoots(t *testing.T, kernel string) bool {
	t.Helper()
	switch os.Getenv("HERALD_VM_ACCEL") {
	case "tcg":
		return false
	case "kvm":
		return true
	}
	kvmProbe.once.Do(func() {
		f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
		if err != nil {
			t.Logf("no KVM (%v): the machine runs under software emulation", err)
			return
		}
		f.Close()
		args := append([]string{"-machine", "q35"}, kvmAccel...)
		args = append(args, "-smp", "1", "-m", "256", "-kernel", kernel, "-append", "console=ttyS0 panic=-1",
			"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot")
		cmd := exec.Command("qemu-system-x86_64", args...)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Logf("KVM probe: %v; the machine runs under software emulation", err)
			return
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		deadline := time.After(30 * time.Second)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !kvmProbe.ok {
			select {
			case <-exited:
				t.Logf("the KVM probe machine stopped (%v): the machine runs under software emulation; its output:\n%s", cmd.ProcessState, tail(out.String(), 1000))
				return
			case <-deadline:
				_ = cmd.Process.Kill()
				<-exited
				t.Logf("under KVM the kernel printed nothing in 30 s: the machine runs under software emulation; QEMU's output:\n%s", tail(out.String(), 1000))
				return
			case <-tick.C:
				kvmProbe.ok = strings.Contains(out.String(), "Linux version")
			}
		}
		_ = cmd.Process.Kill()
		<-exited
		t.Log("the machine runs under KVM")
	})
	return kvmProbe.ok
}

func (v *vm) ready() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", v.httpPort))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// kill cuts the power: QEMU dies with everything the guest had not
// written out.
func (v *vm) kill() {
	v.t.Helper()
	if err := v.cmd.Process.Kill(); err != nil {
		v.t.Fatalf("kill qemu: %v", err)
	}
	select {
	case <-v.exited:
	case <-time.After(time.Minute):
		v.t.Fatal("qemu still runs a minute after SIGKILL")
	}
}

// restart boots the machine again on the same disk and ports.
func (v *vm) restart() {
	v.t.Helper()
	v.start()
}

func (v *vm) stop() {
	if v.cmd == nil || v.cmd.Process == nil {
		return
	}
	select {
	case <-v.exited:
		return
	default:
	}
	_ = v.cmd.Process.Kill()
	<-v.exited
}

// freePort returns a loopback TCP port nobody listened on a moment ago,
// outside the range of outgoing connections; QEMU's forwards take it for
// the whole test.
func freePort(t *testing.T) int {
	t.Helper()
	ports, err := netport.Loopback(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// buildStatic compiles pkg without cgo, so it runs in a machine that has
// no C library, into dir.
func buildStatic(t *testing.T, pkg, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-tags", "fault", "-o", bin, pkg)
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// findKernel returns the newest root/boot/vmlinuz-VERSION and its
// modules' directory.
func findKernel(t *testing.T, root string) (kernel, modDir string) {
	t.Helper()
	found, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	sort.Strings(found)
	for i := len(found) - 1; i >= 0; i-- {
		ver := strings.TrimPrefix(filepath.Base(found[i]), "vmlinuz-")
		dir := filepath.Join(root, "lib", "modules", ver)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return found[i], dir
		}
	}
	t.Fatalf("no kernel with modules under %s (boot/vmlinuz-VERSION and lib/modules/VERSION); "+
		"unpack one and set HERALD_VM_ROOT: apt-get download linux-image-6.1.0-57-amd64 && "+
		"dpkg-deb -x linux-image-6.1.0-57-amd64_*.deb /tmp/vmroot", root)
	return "", ""
}

// moduleOrder returns the module files that load want, each after the
// modules it depends on (read from the modules' .modinfo, so no
// modules.dep is needed).
func moduleOrder(t *testing.T, modDir string, want ...string) []string {
	t.Helper()
	paths := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			paths[strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")] = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	done := map[string]bool{}
	var visit func(name string, from []string)
	visit = func(name string, from []string) {
		if done[name] {
			return
		}
		p, ok := paths[name]
		if !ok {
			t.Fatalf("kernel module %s (needed by %v) is not an uncompressed .ko under %s; built in?", name, from, modDir)
		}
		for _, dep := range moduleDepends(t, p) {
			visit(dep, append(from, name))
		}
		done[name] = true
		order = append(order, p)
	}
	for _, w := range want {
		visit(w, nil)
	}
	return order
}

// moduleDepends reads the depends= field of a module's .modinfo.
func moduleDepends(t *testing.T, path string) []string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("module %s: %v", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		t.Fatalf("module %s has no .modinfo", path)
	}
	data, err := sec.Data()
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(field, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil
			}
			return strings.Split(string(v), ",")
		}
	}
	return nil
}

// writeInitramfs writes an uncompressed newc cpio archive: /init (the
// vminit program), /herald, the modules under /modules with
// /modules.order listing them in load order, /args, and the mount points.
func writeInitramfs(t *testing.T, path, initBin, herald string, mods []string, args string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &cpioWriter{w: bufio.NewWriterSize(f, 1<<20)}
	for _, d := range []string{"dev", "proc", "sys", "data", "tmp", "modules"} {
		w.dir(d)
	}
	w.node("dev/console", 0o020600, 5, 1)
	w.file("init", 0o755, readFile(t, initBin))
	w.file("herald", 0o755, readFile(t, herald))
	var order strings.Builder
	for _, m := range mods {
		name := "modules/" + filepath.Base(m)
		w.file(name, 0o644, readFile(t, m))
		fmt.Fprintf(&order, "/%s\n", name)
	}
	w.file("modules.order", 0o644, []byte(order.String()))
	w.file("args", 0o644, []byte(args))
	w.trailer()
	if w.err == nil {
		w.err = w.w.Flush()
	}
	if w.err != nil {
		t.Fatalf("write %s: %v", path, w.err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cpioWriter writes the "newc" cpio format the kernel unpacks an
// initramfs from: a 110-byte ASCII header per entry, the name and the data
// each padded to 4 bytes, and a TRAILER!!! entry at the end.
type cpioWriter struct {
	w   *bufio.Writer
	ino int
	err error
}

func (c *cpioWriter) dir(name string)                      { c.entry(name, 0o040755, 0, 0, nil) }
func (c *cpioWriter) node(name string, mode, maj, min int) { c.entry(name, mode, maj, min, nil) }
func (c *cpioWriter) file(name string, perm int, data []byte) {
	c.entry(name, 0o100000|perm, 0, 0, data)
}
func (c *cpioWriter) trailer() { c.entry("TRAILER!!!", 0, 0, 0, nil) }

func (c *cpioWriter) entry(name string, mode, rdevMajor, rdevMinor int, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	if c.err != nil {
		return
	}
	c.write(append([]byte(name), 0))
	c.pad(110 + len(name) + 1)
	c.write(data)
	c.pad(len(data))
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}
