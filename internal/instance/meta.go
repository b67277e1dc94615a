package instance

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/rsonpath/armdev/internal/atomicfile"
)

// DiskMeta describes the working disk: where it came from and what was done
// to it. It is kept next to the disk as disk.json.
type DiskMeta struct {
	// BaseKey names the prepared base the overlay sits on.
	BaseKey string `json:"base_key"`
	// Base is the base's path when the overlay was made (informative: what a
	// disk really uses is read from the disk itself, see disk.BackingChain).
	Base string `json:"base"`
	// Release, BuildID and Image say which Hydra build the base came from.
	Release string `json:"release"`
	BuildID int    `json:"build_id"`
	Image   string `json:"image"`
	// Created is when the overlay was made.
	Created time.Time `json:"created"`
	// Provisioned is set once the first boot applied our configuration and
	// the "provisioned" snapshot exists.
	Provisioned   bool      `json:"provisioned"`
	ProvisionedAt time.Time `json:"provisioned_at,omitzero"`
	// GuestUser is the account the guest has for SSH, as last applied;
	// empty on disks provisioned before armdev recorded it ("armdev").
	GuestUser string `json:"guest_user,omitempty"`
	// AppliedConfig is the digest of share/etc/nixos and the identity when
	// they were last applied.
	AppliedConfig string `json:"applied_config,omitempty"`
	// RepinHostKey lets the next SSH contact pin a new host key: set when
	// armdev itself made, reverted or reset the disk.
	RepinHostKey bool `json:"repin_host_key,omitempty"`
}

// User is the guest account to log in as: GuestUser, or "armdev" for disks
// provisioned before it was recorded.
func (m DiskMeta) User() string {
	if m.GuestUser == "" {
		return "armdev"
	}
	return m.GuestUser
}

// DiskState says whether there is a working disk and whether its metadata
// could be read.
type DiskState int

const (
	// NoDisk: there is no disk.qcow2.
	NoDisk DiskState = iota
	// KnownDisk: disk.qcow2 and readable metadata.
	KnownDisk
	// UnknownDisk: disk.qcow2 exists but disk.json is missing or unreadable.
	// It is still somebody's disk: it is never replaced without a yes and a
	// backup.
	UnknownDisk
)

// WorkingDisk is what LoadDisk found.
type WorkingDisk struct {
	// State says which case this is.
	State DiskState
	// Meta is the metadata (zero unless State is KnownDisk).
	Meta DiskMeta
	// MetaErr is why the metadata could not be read (UnknownDisk only).
	MetaErr error
}

// LoadDisk reads the working disk's metadata. A missing disk.json next to an
// existing disk.qcow2 is an UnknownDisk, not "no disk".
func (l Layout) LoadDisk() (WorkingDisk, error) {
	if _, err := os.Lstat(l.Disk()); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return WorkingDisk{State: NoDisk}, nil
		}
		return WorkingDisk{}, fmt.Errorf("look at the working disk: %w", err)
	}
	var m DiskMeta
	if err := readJSON(l.DiskMeta(), &m); err != nil {
		return WorkingDisk{State: UnknownDisk, MetaErr: err}, nil
	}
	return WorkingDisk{State: KnownDisk, Meta: m}, nil
}

// SaveDisk writes the working disk's metadata durably.
func (l Layout) SaveDisk(m DiskMeta) error {
	return writeJSON(l.DiskMeta(), m)
}

// ReadDiskMeta reads a disk.json-like file (a backup's, say).
func ReadDiskMeta(path string) (DiskMeta, error) {
	var m DiskMeta
	err := readJSON(path, &m)
	return m, err
}

// RunRecord records how the running VM was started, for status, ssh and
// shutdown.
type RunRecord struct {
	PID     int    `json:"pid"`
	SSHPort int    `json:"ssh_port"`
	Accel   string `json:"accel"`
	CPU     string `json:"cpu"`
	// QMP and Serial are the sockets actually used (see qemuvm.SocketPath).
	QMP    string `json:"qmp"`
	Serial string `json:"serial"`
	// Cmdline is QEMU's command line, quoted to paste.
	Cmdline string `json:"cmdline,omitempty"`
}

// LoadRun reads the run record; ok is false when there is none.
func (l Layout) LoadRun() (rec RunRecord, ok bool, err error) {
	err = readJSON(l.RunRecord(), &rec)
	if errors.Is(err, fs.ErrNotExist) {
		return RunRecord{}, false, nil
	}
	if err != nil {
		return RunRecord{}, false, err
	}
	return rec, true, nil
}

// SaveRun writes the run record.
func (l Layout) SaveRun(rec RunRecord) error {
	return writeJSON(l.RunRecord(), rec)
}

// ClearRun removes the run record (the VM is gone).
func (l Layout) ClearRun() error {
	if err := os.Remove(l.RunRecord()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove run record: %w", err)
	}
	return nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s is not valid JSON: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o644)
}
