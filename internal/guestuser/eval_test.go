package guestuser_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/rsonpath/armdev/internal/guestuser"
	"github.com/rsonpath/armdev/internal/nixoseval"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9vZm9vZm9vZm9vZm9vZm9vZm9vZm9vZm9vZm9vZm9v armdev"

// TestIdentitiesEvaluate renders the identity of every host in the mapping
// table, evaluates the repository's share/etc/nixos with it and checks that
// NixOS's assertions pass and that the declared user and group are the
// Identity's.
func TestIdentitiesEvaluate(t *testing.T) {
	nixoseval.Require(t)
	dir := nixoseval.ConfigDir(t)
	hosts := []struct{ uid, gid int }{
		{0, 0}, {501, 20}, {1000, 100}, {1000, 1000}, {1001, 1001}, {65534, 65534},
		{30001, 30000}, {999, 999}, {42, 42}, {61184, 61184}, {1000, 31001}, {1234567, 1234567},
	}
	for _, h := range hosts {
		t.Run(fmt.Sprintf("%d_%d", h.uid, h.gid), func(t *testing.T) {
			id := guestuser.For(h.uid, h.gid, "armdev")
			r, err := nixoseval.Eval(t.Context(), dir, guestuser.Render(id, "26.05", []string{testKey}))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.FailedAssertions) > 0 {
				t.Fatalf("NixOS would refuse %+v:\n%q (traces %q)", id, r.FailedAssertions, r.Traces)
			}
			u, ok := r.Users[id.User]
			if !ok {
				t.Fatalf("no user %s declared", id.User)
			}
			if u.UID == nil || *u.UID != id.UID || u.IsNormalUser != id.IsNormalUser || u.IsSystemUser != id.IsSystemUser || u.Group != id.Group {
				t.Errorf("declared %+v (uid %v), want %+v", u, deref(u.UID), id)
			}
			if u.Home != "/home/"+id.User || !u.CreateHome || !u.UseDefaultShell || !slices.Contains(u.ExtraGroups, "wheel") {
				t.Errorf("user %s: home %q createHome %t useDefaultShell %t groups %q: want a home, a login shell and wheel",
					id.User, u.Home, u.CreateHome, u.UseDefaultShell, u.ExtraGroups)
			}
			g, ok := r.Groups[id.Group]
			if !ok {
				t.Fatalf("group %s does not exist", id.Group)
			}
			switch {
			case !id.DeclareGroup:
				if g.GID == nil || *g.GID != 100 {
					t.Errorf("group %s has gid %v, want NixOS's 100", id.Group, deref(g.GID))
				}
			case id.HasGID:
				if g.GID == nil || *g.GID != id.GID {
					t.Errorf("group %s has gid %v, want %d", id.Group, deref(g.GID), id.GID)
				}
			default:
				if g.GID != nil {
					t.Errorf("group %s has gid %d, want none (NixOS allocates it)", id.Group, *g.GID)
				}
			}
			if r.AutologinUser == nil || *r.AutologinUser != id.User {
				t.Errorf("autologin user %v, want %s", deref(r.AutologinUser), id.User)
			}
			if want := "/home/" + id.User + "/target"; r.Variables["CARGO_TARGET_DIR"] != want {
				t.Errorf("CARGO_TARGET_DIR = %q, want %q", r.Variables["CARGO_TARGET_DIR"], want)
			}
			if r.StateVersion == nil || *r.StateVersion != "26.05" {
				t.Errorf("stateVersion %v, want the identity's 26.05", deref(r.StateVersion))
			}
		})
	}
}

// TestOtherUserName checks that ARMDEV_USER reaches the configuration: the
// user, its group, autologin and home follow the identity.
func TestOtherUserName(t *testing.T) {
	nixoseval.Require(t)
	id := guestuser.For(1000, 1000, "dev.alice")
	r, err := nixoseval.Eval(t.Context(), nixoseval.ConfigDir(t), guestuser.Render(id, "25.11", []string{testKey}))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.FailedAssertions) > 0 {
		t.Fatalf("failed assertions: %q", r.FailedAssertions)
	}
	if _, ok := r.Users["armdev"]; ok {
		t.Error("the configuration still declares armdev")
	}
	u := r.Users["dev.alice"]
	if u.Home != "/home/dev.alice" || r.Groups["dev.alice"].GID == nil || deref(r.AutologinUser) != "dev.alice" {
		t.Errorf("user %+v, group %+v, autologin %v", u, r.Groups["dev.alice"], deref(r.AutologinUser))
	}
}

// TestRenderRoundTrip reads Render's output with Nix: every value, escapes
// included, comes back as written.
func TestRenderRoundTrip(t *testing.T) {
	nixoseval.Require(t)
	id := guestuser.For(501, 20, "armdev")
	keys := []string{testKey, `weird "quoted" \ ${not interpolated} $${x} line` + "\nbreak\ttab"}
	path := filepath.Join(t.TempDir(), "identity.nix")
	if err := os.WriteFile(path, guestuser.Render(id, "26.05", keys), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := nixoseval.EvalFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		User           string   `json:"user"`
		UID            int      `json:"uid"`
		IsNormalUser   bool     `json:"isNormalUser"`
		IsSystemUser   bool     `json:"isSystemUser"`
		Group          string   `json:"group"`
		GID            *int     `json:"gid"`
		DeclareGroup   bool     `json:"declareGroup"`
		Release        string   `json:"release"`
		AuthorizedKeys []string `json:"authorizedKeys"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.User != id.User || got.UID != id.UID || got.IsNormalUser != id.IsNormalUser || got.IsSystemUser != id.IsSystemUser ||
		got.Group != id.Group || got.GID != nil || got.DeclareGroup != id.DeclareGroup || got.Release != "26.05" {
		t.Errorf("read back %+v, wrote %+v", got, id)
	}
	if !reflect.DeepEqual(got.AuthorizedKeys, keys) {
		t.Errorf("keys read back %q, wrote %q", got.AuthorizedKeys, keys)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
