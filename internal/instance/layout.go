// Package instance is what one armdev workspace is on disk: the layout of
// its state folder, the working disk's metadata, the record of the running
// VM, the lock that lets one armdev at a time change the workspace, and a
// handle on the running VM. The orchestration (internal/workspace) decides
// what to do; this package knows where things are and what they say.
//
// Every package and test names state files through this package, as Lima
// names its instance files in one place (pkg/limatype/filenames).
package instance

import (
	"path/filepath"

	"github.com/rsonpath/armdev/internal/qemuvm"
)

// The state folder's entries, relative to the folder (ARMDEV_STATE_DIR).
const (
	// HydraLock pins the Hydra build: id, URL, file name, size, sha256.
	HydraLock = "hydra-lock.json"
	// Downloads holds the image, as <build>-<name>.img.zst (.part while
	// downloading, .verified once checked).
	Downloads = "downloads"
	// Bases holds prepared bases, <key>.img: the image decompressed with
	// init/ and the workspace key laid in.
	Bases = "bases"
	// Disk is the working disk: a qcow2 overlay on a base.
	Disk = "disk.qcow2"
	// DiskMetaFile says where the working disk came from and what was done to it.
	DiskMetaFile = "disk.json"
	// Backups holds earlier working disks (disk-<date>.qcow2 and .json).
	Backups = "backups"
	// UBoot is u-boot.bin when a nix build provided it.
	UBoot = "u-boot.bin"
	// SSHDir holds the workspace key, the pinned host key and the OpenSSH config.
	SSHDir = "ssh"
	// KnownHosts (in SSHDir) pins the guest's host key.
	KnownHosts = "known_hosts"
	// SSHConfig (in SSHDir) is the config block for `ssh -F`.
	SSHConfig = "config"
	// GuestDir holds what armdev uploads into the guest: the identity.
	GuestDir = "guest"
	// Identity (in GuestDir) is the last identity.nix uploaded to the guest's
	// /etc/armdev/identity.nix.
	Identity = "identity.nix"
	// RunDir holds the running VM's files.
	RunDir = "run"
	// PIDFile (in RunDir) is QEMU's -pidfile; QEMU holds a lock on it.
	PIDFile = "qemu.pid"
	// QMPSocket (in RunDir) is QEMU's monitor. Deep state folders use a short
	// private folder instead (qemuvm.SocketPath); RunRecord says which.
	QMPSocket = "qmp.sock"
	// SerialSocket (in RunDir) is the guest's serial console.
	SerialSocket = "serial.sock"
	// RunRecordFile (in RunDir) records how the running VM was started.
	RunRecordFile = "vm.json"
	// LogsDir holds the logs.
	LogsDir = "logs"
	// SerialLog (in LogsDir) is everything the guest printed on its console.
	SerialLog = "serial.log"
	// QEMULog (in LogsDir) is QEMU's command line, then its own output.
	QEMULog = "qemu.log"
	// ProvisionLog (in LogsDir) is the output of every provisioning run.
	ProvisionLog = "provision.log"
	// Stamps holds content digests for the build graph.
	Stamps = "stamps"
	// LockFile is the workspace lock (flock); it names its holder.
	LockFile = "armdev.lock"
)

// Snapshot names inside the working disk (qcow2 internal snapshots).
const (
	// FreshSnapshot is the disk as prepared, before its first boot: every
	// provisioning attempt starts from it, so that a retry is a true first boot.
	FreshSnapshot = "fresh"
	// ProvisionedSnapshot is the disk right after provisioning; reset returns to it.
	ProvisionedSnapshot = "provisioned"
)

// GuestName is QEMU's -name and process name (/proc/PID/comm), part of how
// armdev recognises its own QEMU.
const GuestName = qemuvm.DefaultName

// Layout names the paths of one state folder.
type Layout struct {
	// Dir is the state folder.
	Dir string
}

// Path joins elem onto the state folder.
func (l Layout) Path(elem ...string) string {
	return filepath.Join(append([]string{l.Dir}, elem...)...)
}

// HydraLock is the pinned Hydra build.
func (l Layout) HydraLock() string { return l.Path(HydraLock) }

// Downloads is the download folder.
func (l Layout) Downloads() string { return l.Path(Downloads) }

// Bases is the folder of prepared bases.
func (l Layout) Bases() string { return l.Path(Bases) }

// Base is the prepared base with key.
func (l Layout) Base(key string) string { return l.Path(Bases, key+".img") }

// Disk is the working disk.
func (l Layout) Disk() string { return l.Path(Disk) }

// DiskMeta is the working disk's metadata.
func (l Layout) DiskMeta() string { return l.Path(DiskMetaFile) }

// Backups is the folder of earlier working disks.
func (l Layout) Backups() string { return l.Path(Backups) }

// SSHDir is the folder of the key, the pin and the OpenSSH config.
func (l Layout) SSHDir() string { return l.Path(SSHDir) }

// KnownHosts pins the guest's host key.
func (l Layout) KnownHosts() string { return l.Path(SSHDir, KnownHosts) }

// SSHConfig is the OpenSSH config block.
func (l Layout) SSHConfig() string { return l.Path(SSHDir, SSHConfig) }

// Identity is the last identity uploaded to the guest.
func (l Layout) Identity() string { return l.Path(GuestDir, Identity) }

// RunDir is the running VM's folder.
func (l Layout) RunDir() string { return l.Path(RunDir) }

// PIDFile is QEMU's pid file.
func (l Layout) PIDFile() string { return l.Path(RunDir, PIDFile) }

// QMPSocket is where the QMP socket goes when the path is short enough.
func (l Layout) QMPSocket() string { return l.Path(RunDir, QMPSocket) }

// SerialSocket is where the serial socket goes when the path is short enough.
func (l Layout) SerialSocket() string { return l.Path(RunDir, SerialSocket) }

// RunRecord records how the running VM was started.
func (l Layout) RunRecord() string { return l.Path(RunDir, RunRecordFile) }

// LogsDir is the folder of logs.
func (l Layout) LogsDir() string { return l.Path(LogsDir) }

// SerialLog is the serial console's log.
func (l Layout) SerialLog() string { return l.Path(LogsDir, SerialLog) }

// QEMULog is QEMU's command line and output.
func (l Layout) QEMULog() string { return l.Path(LogsDir, QEMULog) }

// ProvisionLog is the provisioning runs' output.
func (l Layout) ProvisionLog() string { return l.Path(LogsDir, ProvisionLog) }

// Stamp is the content stamp called name.
func (l Layout) Stamp(name string) string { return l.Path(Stamps, name) }

// LockFile is the workspace lock.
func (l Layout) LockFile() string { return l.Path(LockFile) }
