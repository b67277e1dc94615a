package guestuser

// The tables below are copied from nixpkgs' nixos/modules/misc/ids.nix at
// commit 001d025fd4d70322f01b25021f074db9c359ae0a.

// staticUIDs is ids.uids of ids.nix, without the commented-out entries. A service's user is only
// declared when the service is enabled, but the configuration is the
// user's to extend: a guest uid taken from here would break
// `nixos-rebuild switch` ("UIDs and GIDs must be unique!") the day they
// enable that service.
var staticUIDs = map[string]int{
	"root": 0, "messagebus": 4, "haldaemon": 5, "ftp": 8, "nagios": 11, "atd": 12,
	"postfix": 13, "dovecot": 15, "tomcat": 16, "uucp": 19, "pulseaudio": 22, "gpsd": 23,
	"polkituser": 28, "davfs2": 31, "disnix": 33, "osgi": 34, "tor": 35, "cups": 36,
	"foldingathome": 37, "sabnzbd": 38, "git": 41, "dovecot2": 46, "dovenull2": 47,
	"mpd": 50, "clamav": 51, "wwwrun": 54, "spamd": 56, "nslcd": 58, "scanner": 59,
	"nginx": 60, "chrony": 61, "smtpd": 63, "smtpq": 64, "supybot": 65, "iodined": 66,
	"graphite": 68, "transmission": 70, "postgres": 71, "smbguest": 74, "varnish": 75,
	"datadog": 76, "lighttpd": 77, "lightdm": 78, "freenet": 79, "ircd": 80, "bacula": 81,
	"deluge": 83, "mysql": 84, "rabbitmq": 85, "activemq": 86, "gnunet": 87, "oidentd": 88,
	"quassel": 89, "amule": 90, "minidlna": 91, "elasticsearch": 92, "tcpcryptd": 93,
	"firebird": 95, "munin": 102, "dictd": 105, "couchdb": 106, "jenkins": 109,
	"systemd-journal-gateway": 110, "aerospike": 111, "vault": 115, "murmur": 117,
	"foundationdb": 118, "newrelic": 119, "starbound": 120, "hydra": 122, "spiped": 123,
	"teamspeak": 124, "influxdb": 125, "nsd": 126, "gitolite": 127, "znc": 128,
	"polipo": 129, "mopidy": 130, "gdm": 132, "siproxd": 134, "mlmmj": 135, "riemann": 137,
	"riemanndash": 138, "yandexdisk": 143, "redmine": 147, "prosody": 149, "i2pd": 150,
	"systemd-coredump": 151, "systemd-network": 152, "systemd-resolve": 153,
	"systemd-timesync": 154, "liquidsoap": 155, "hbase": 158, "opentsdb": 159,
	"scollector": 160, "bosun": 161, "kubernetes": 162, "peerflix": 163, "gitlab": 165,
	"cadvisor": 167, "nylon": 168, "exim": 172, "sddm": 175, "zabbix": 180, "uptimed": 184,
	"mediatomb": 187, "ihaskell": 189, "i2p": 190, "lambdabot": 191, "asterisk": 192,
	"plex": 193, "plexpy": 195, "grafana": 196, "skydns": 197, "uwsgi": 201,
	"riemanntools": 203, "subsonic": 204, "gateone": 207, "namecoin": 208, "xtreemfs": 212,
	"calibre-server": 213, "bepasty": 215, "nm-openvpn": 217, "ejabberd": 219,
	"postsrsd": 220, "opendkim": 221, "dspam": 222, "matrix-synapse": 224, "rspamd": 225,
	"cfdyndns": 227, "pdnsd": 229, "octoprint": 230, "avahi-autoipd": 231,
	"mjpg-streamer": 233, "hydra-queue-runner": 235, "hydra-www": 236, "syncthing": 237,
	"caddy": 239, "taskd": 240, "sniproxy": 244, "nzbget": 245, "mosquitto": 246,
	"turnserver": 249, "gocd-agent": 251, "gocd-server": 252, "terraria": 253,
	"mattermost": 254, "prometheus": 255, "telegraf": 256, "gitlab-runner": 257,
	"postgrey": 258, "leaps": 260, "ipfs": 261, "infinoted": 264, "sickbeard": 265,
	"headphones": 266, "rpc": 271, "fcron": 273, "sonarr": 274, "radarr": 275,
	"jackett": 276, "aria2": 277, "clickhouse": 278, "rslsync": 279, "minio": 280,
	"kanboard": 281, "kodi": 283, "mighttpd2": 285, "hass": 286, "ceph": 288,
	"duplicati": 289, "monetdb": 290, "restic": 291, "openvpn": 292, "yarn": 294,
	"hdfs": 295, "mapred": 296, "hadoop": 297, "cfssl": 299, "cassandra": 300,
	"qemu-libvirtd": 301, "lirc": 305, "lidarr": 306, "slurm": 307, "kapacitor": 308,
	"alerta": 310, "minetest": 311, "rss2email": 312, "cockroachdb": 313, "zoneminder": 314,
	"paperless": 315, "zigbee2mqtt": 317, "hqplayer": 319, "moonraker": 320, "distcc": 321,
	"webdav": 322, "pipewire": 323, "rstudio-server": 324, "localtimed": 325,
	"automatic-timezoned": 326, "shoko": 328,
	"nixbld": 30000, "nobody": 65534,
}

// staticGIDs is ids.gids of the same file. users-groups.nix always declares
// root, wheel, disk, kmem, tty, floppy, uucp, lp, cdrom, tape, audio, video,
// dialout, nogroup, users, nixbld, utmp, adm, input, kvm, render, sgx and
// shadow with these gids (and, in newer nixpkgs, clock, whose gid this
// commit does not list yet).
var staticGIDs = map[string]int{
	"root": 0, "wheel": 1, "kmem": 2, "tty": 3, "messagebus": 4, "haldaemon": 5, "disk": 6,
	"ftp": 8, "atd": 12, "postfix": 13, "postdrop": 14, "dovecot": 15, "tomcat": 16,
	"audio": 17, "floppy": 18, "uucp": 19, "lp": 20, "proc": 21, "pulseaudio": 22,
	"gpsd": 23, "cdrom": 24, "tape": 25, "video": 26, "dialout": 27, "utmp": 29,
	"davfs2": 31, "disnix": 33, "osgi": 34, "tor": 35, "git": 41, "fourstore": 42,
	"fourstorehttp": 43, "virtuoso": 44, "dovecot2": 46, "dovenull2": 47, "mpd": 50,
	"clamav": 51, "wwwrun": 54, "adm": 55, "spamd": 56, "networkmanager": 57, "nslcd": 58,
	"scanner": 59, "nginx": 60, "chrony": 61, "systemd-journal": 62, "smtpd": 63,
	"smtpq": 64, "supybot": 65, "iodined": 66, "libvirtd": 67, "graphite": 68,
	"transmission": 70, "postgres": 71, "vboxusers": 72, "vboxsf": 73, "smbguest": 74,
	"varnish": 75, "datadog": 76, "lighttpd": 77, "lightdm": 78, "freenet": 79, "ircd": 80,
	"bacula": 81, "deluge": 83, "mysql": 84, "rabbitmq": 85, "activemq": 86, "gnunet": 87,
	"oidentd": 88, "quassel": 89, "amule": 90, "minidlna": 91, "elasticsearch": 92,
	"firebird": 95, "keys": 96, "munin": 102, "dictd": 105, "couchdb": 106, "jenkins": 109,
	"systemd-journal-gateway": 110, "aerospike": 111, "vault": 115, "murmur": 117,
	"foundationdb": 118, "newrelic": 119, "starbound": 120, "hydra": 122, "spiped": 123,
	"teamspeak": 124, "influxdb": 125, "nsd": 126, "gitolite": 127, "znc": 128,
	"polipo": 129, "mopidy": 130, "docker": 131, "gdm": 132, "siproxd": 134, "mlmmj": 135,
	"riemann": 137, "riemanndash": 138, "uhub": 142, "redmine": 147, "prosody": 149,
	"i2pd": 150, "systemd-network": 152, "systemd-resolve": 153, "systemd-timesync": 154,
	"liquidsoap": 155, "hbase": 158, "opentsdb": 159, "scollector": 160, "bosun": 161,
	"kubernetes": 162, "gitlab": 165, "nylon": 168, "exim": 172, "input": 174, "sddm": 175,
	"zabbix": 180, "mediatomb": 187, "ihaskell": 189, "i2p": 190, "lambdabot": 191,
	"asterisk": 192, "plex": 193, "sabnzbd": 194, "uwsgi": 201, "gitit": 202,
	"riemanntools": 203, "subsonic": 204, "gateone": 207, "namecoin": 208, "xtreemfs": 212,
	"calibre-server": 213, "bepasty": 215, "nm-openvpn": 217, "mathics": 218,
	"ejabberd": 219, "postsrsd": 220, "opendkim": 221, "dspam": 222, "matrix-synapse": 224,
	"rspamd": 225, "cfdyndns": 227, "pdnsd": 229, "octoprint": 230, "syncthing": 237,
	"caddy": 239, "taskd": 240, "sniproxy": 244, "nzbget": 245, "mosquitto": 246,
	"turnserver": 249, "gocd-agent": 251, "gocd-server": 252, "terraria": 253,
	"mattermost": 254, "prometheus": 255, "gitlab-runner": 257, "postgrey": 258,
	"leaps": 260, "ipfs": 261, "infinoted": 264, "sickbeard": 265, "headphones": 266,
	"fcron": 273, "sonarr": 274, "radarr": 275, "jackett": 276, "aria2": 277,
	"clickhouse": 278, "rslsync": 279, "minio": 280, "kanboard": 281, "kodi": 283,
	"mighttpd2": 285, "hass": 286, "ceph": 288, "duplicati": 289, "monetdb": 290,
	"restic": 291, "openvpn": 292, "yarn": 294, "hdfs": 295, "mapred": 296, "hadoop": 297,
	"cfssl": 299, "cassandra": 300, "qemu-libvirtd": 301, "kvm": 302, "render": 303,
	"sgx": 304, "lirc": 305, "lidarr": 306, "slurm": 307, "kapacitor": 308, "alerta": 310,
	"minetest": 311, "rss2email": 312, "cockroachdb": 313, "zoneminder": 314,
	"paperless": 315, "zigbee2mqtt": 317, "shadow": 318, "hqplayer": 319, "moonraker": 320,
	"distcc": 321, "webdav": 322, "pipewire": 323, "rstudio-server": 324, "localtimed": 325,
	"automatic-timezoned": 326, "uinput": 327, "shoko": 328,
	"onepassword": 31001, "onepassword-cli": 31002,
	"users": 100, "nixbld": 30000, "nogroup": 65534,
}

// reservedRange is an id range ids.nix's comment tells NixOS modules to
// keep free: ids there belong to mechanisms, not to declared accounts.
type reservedRange struct {
	lo, hi int64 // int64: 2^32-1 does not fit a 32-bit int
	what   string
}

// reservedRanges are those ranges, for uids and gids alike. Nix's build
// users sit in 30000–31000 (nix-daemon.nix declares nixbld1… at 30001 up),
// systemd hands out 61184–65519 to DynamicUser= services at run time, and
// 65535 and 2^32-2, 2^32-1 are error or "unauthenticated" sentinels.
var reservedRanges = []reservedRange{
	{30000, 31000, "the range of Nix's build users, 30000–31000"},
	{61184, 65519, "systemd's DynamicUser range, 61184–65519"},
	{65535, 65535, "the 16-bit error value 65535"},
	{4294967294, 4294967295, "the NFS and error sentinels 4294967294–4294967295"},
}
