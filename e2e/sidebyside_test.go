package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rsonpath/armdev/internal/harness"
	"github.com/rsonpath/armdev/internal/testguest"
)

// sideBySide checks a second workspace next to the running one, with its
// own guest user (ARMDEV_USER): a taken port is named; a provisioning that
// fails after it turned root login off keeps the disk and names its log,
// and the rerun still provisions (it starts again from the fresh disk); the
// first guest keeps running throughout.
func sideBySide(t *testing.T, ctx context.Context, h *harness.Harness) {
	t.Helper()
	h2, err := h.Sibling(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Just(context.Background(), nil, "arm-dev-kill")
	const user = "rsdev"

	h2.Extra = []string{"ARMDEV_USER=" + user, fmt.Sprintf("ARMDEV_SSH_PORT=%d", h.Port)}
	r := h2.Just(ctx, nil, "arm-dev-init")
	if r.Code == 0 || !strings.Contains(r.Stderr, fmt.Sprintf("SSH port %d on 127.0.0.1 is in use: set ARMDEV_SSH_PORT", h.Port)) {
		t.Errorf("a taken port: %s", r)
	}
	h2.Extra = []string{"ARMDEV_USER=" + user}

	conf := filepath.Join(h2.NixOS, "configuration.nix")
	good, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, append([]byte("# "+testguest.FailAfterActivationMarker+"\n"), good...), 0o644); err != nil {
		t.Fatal(err)
	}
	r = h2.Just(ctx, nil, "arm-dev-init")
	if r.Code == 0 || !strings.Contains(r.Stderr, "provisioning failed") || !strings.Contains(r.Stderr, "provision.log") {
		t.Errorf("a failing provisioning: %s", r)
	}
	if _, err := os.Stat(h2.Layout().Disk()); err != nil {
		t.Errorf("the disk was not kept for inspection: %v", err)
	}
	if alive(h2.PID()) {
		t.Errorf("the failed provisioning left its guest running")
	}
	if err := os.WriteFile(conf, good, 0o644); err != nil {
		t.Fatal(err)
	}
	// The failed switch turned root login off; only a true first boot lets
	// the rerun log in as root again.
	r = h2.Just(ctx, nil, "arm-dev-init")
	if r.Code != 0 || !strings.Contains(r.Stdout, "provisioned") {
		t.Errorf("rerun after a failed provisioning: %s", r)
	}
	log, _ := os.ReadFile(h2.Layout().ProvisionLog())
	if n := strings.Count(string(log), "=== provisioning"); n != 2 || !strings.Contains(string(log), "armdev: provisioning done") {
		t.Errorf("provision.log should hold a failed and a successful run:\n%s", log)
	}

	// The second guest has its own user, declared for this host user.
	if r := h2.Just(ctx, nil, "arm-dev"); r.Code != 0 {
		t.Fatalf("start the second guest: %s", r)
	}
	if r := h2.Just(ctx, nil, "arm-dev-ssh", "id", "-un"); strings.TrimSpace(r.Stdout) != user {
		t.Errorf("the second guest logs in as %q, want %s: %s", r.Stdout, user, r)
	}
	if r := h2.Just(ctx, nil, "arm-dev-ssh", "id", "-u"); strings.TrimSpace(r.Stdout) != fmt.Sprint(h2.Identity().UID) {
		t.Errorf("the second guest's uid is %q, want %d", r.Stdout, h2.Identity().UID)
	}
	// the first workspace's guest was not disturbed
	if r := h.Just(ctx, nil, "arm-dev-ssh", "true"); r.Code != 0 {
		t.Errorf("the first guest stopped answering: %s", r)
	}
}
