# The slow path of armdev's dev shell (see devshell.go): evaluate the
# project's dev shell with `nix print-dev-env --profile`, as nix-direnv does,
# and cache the environment it exports, so that later commands load it with
# one `.` and no Nix.
#
# usage: bash --noprofile --norc -c "$script" armdev-devshell KIND FILE KEY PROJECT
#   KIND     nix (FILE is shell.nix or default.nix) or flake (FILE is flake.nix)
#   KEY      the host's hash of the files that define the shell
#   PROJECT  the project's folder in the guest (/rsonpath)
# Writes, in ~/.cache/armdev/devshell: KEY.env, the environment as
# `export NAME='value'` and `unset NAME` lines that any sh can load;
# KEY.bashrc, the interactive shell's rcfile; and KEY.profile, nix's profile
# of the environment, a garbage collector root (nix registers it in
# /nix/var/nix/gcroots/auto). Then deletes the files of other keys. A failed
# evaluation shows nix's error and leaves the cache as it was. The caller
# gives it /dev/null as stdin and its stderr as stdout.
#
# The host sends it with every command, without comments and indentation
# (see command.go): no line may start with # inside a quoted string.

kind=$1 file=$2 key=$3 project=$4
dir=$HOME/.cache/armdev/devshell
echo "armdev: preparing the project's dev shell (first time: this takes a while under emulation)" >&2
mkdir -p "$dir" || exit 1
work=$(mktemp -d "$dir/.work.XXXXXX") || exit 1
# A dropped connection or ^C must not leave the work folder behind.
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
cd "$project" || exit 1

case $kind in
# --impure and inNixShell as nix-shell and nix-direnv evaluate shell.nix.
nix) set -- -f "$file" --impure --arg inNixShell true ;;
flake) set -- "$project" ;;
*)
	echo "armdev: unknown kind of dev shell '$kind'" >&2
	exit 2
	;;
esac
# The profile goes straight to its place: nix changes it only on success,
# and registers a root for the path it was made at.
if ! IN_NIX_SHELL=impure nix --extra-experimental-features 'nix-command flakes' \
	print-dev-env --profile "$dir/$key.profile" "$@" >"$work/rc"; then
	echo "armdev: the project's dev shell did not evaluate (nix's error is above): fix $project/$file, or set ARMDEV_NIX_SHELL=0 to work outside it" >&2
	exit 1
fi

# In a subshell: the rc script sets many variables and functions of its own.
# Its variables are compared before and after: what it exports (including
# what shellHook exports) is the dev shell. Our own names start with
# __armdev_ so that the rc cannot clobber them.
if ! (
	# __armdev_exported fills the associative array named $1 with the set,
	# exported, writable, plain variables: ${!X@} lists the names that start
	# with X (bash's own, with no compgen needed).
	__armdev_exported() {
		local -n __armdev_into=$1
		local __armdev_p __armdev_n
		for __armdev_p in {A..Z} {a..z} _; do
			eval "set -- \${!$__armdev_p@}"
			for __armdev_n; do
				[[ ${!__armdev_n@a} == *x* && ${!__armdev_n@a} != *[raA]* && -n ${!__armdev_n+set} ]] &&
					__armdev_into[$__armdev_n]=${!__armdev_n}
			done
		done
	}
	declare -A __armdev_before=() __armdev_after=()
	__armdev_exported __armdev_before
	# As nix-shell: tools may ask whether they run in one.
	export IN_NIX_SHELL=impure
	# nix's rc makes NIX_BUILD_TOP with mktemp: keep it in the work folder.
	export TMPDIR=$work
	# shellHook's output is not the command's.
	. "$work/rc" >&2 </dev/null
	set +eu
	__armdev_exported __armdev_after
	# __armdev_q sets __armdev_r to $1 single-quoted for any POSIX sh
	# (without a subshell per variable).
	__armdev_q() {
		__armdev_r=\'${1//\'/\'\\\'\'}\'
	}

	# __armdev_session: variables of the session or of the evaluation, never
	# of the dev shell (nix's own list, and the temporary folders nix's rc
	# makes and nix-direnv drops).
	__armdev_session() {
		case $1 in
		PWD | OLDPWD | SHLVL | _ | HOME | USER | LOGNAME | SHELL | MAIL | TERM | TZ | \
			HOSTNAME | DISPLAY | COLUMNS | LINES | SSH_* | XDG_RUNTIME_DIR | XDG_SESSION_* | \
			TMPDIR | TMP | TEMP | TEMPDIR | NIX_BUILD_TOP | NIX_LOG_FD | NIX_REMOTE | terminfo | \
			BASHOPTS | SHELLOPTS | PPID | UID | EUID)
			return 0
			;;
		esac
		return 1
	}
	{
		printf '# armdev: the dev shell of %s (%s), key %s.\n' "$project" "$file" "$key"
		printf '# What it exports after its shellHook, made by nix print-dev-env; load it with `. FILE`.\n'
		for __armdev_n in $(printf '%s\n' "${!__armdev_after[@]}" | LC_ALL=C sort); do
			__armdev_session "$__armdev_n" && continue
			__armdev_v=${__armdev_after[$__armdev_n]}
			if [[ ${__armdev_before[$__armdev_n]+set} ]]; then
				__armdev_o=${__armdev_before[$__armdev_n]}
				[[ $__armdev_v == "$__armdev_o" ]] && continue
				# nix puts the shell's folders in front of the caller's PATH
				# (and XDG_DATA_DIRS): keep the caller's, whatever it is then.
				if [[ ($__armdev_n == PATH || $__armdev_n == XDG_DATA_DIRS) && -n $__armdev_o && $__armdev_v == *"$__armdev_o"* ]]; then
					__armdev_q "${__armdev_v%%"$__armdev_o"*}"
					printf 'export %s=%s"$%s"' "$__armdev_n" "$__armdev_r" "$__armdev_n"
					__armdev_q "${__armdev_v#*"$__armdev_o"}"
					printf '%s\n' "$__armdev_r"
					continue
				fi
			fi
			__armdev_q "$__armdev_v"
			printf 'export %s=%s\n' "$__armdev_n" "$__armdev_r"
		done
		for __armdev_n in $(printf '%s\n' "${!__armdev_before[@]}" | LC_ALL=C sort); do
			__armdev_session "$__armdev_n" && continue
			[[ ${__armdev_after[$__armdev_n]+set} ]] || printf 'unset %s\n' "$__armdev_n"
		done
	} >"$work/env.part" && mv -f "$work/env.part" "$work/env"
) || [ ! -f "$work/env" ]; then
	echo "armdev: could not record the project's dev shell (did its shellHook exit?)" >&2
	rm -f "$dir/$key.profile" "$dir/$key.profile"-*-link
	exit 1
fi

# q prints $1 single-quoted for any POSIX sh.
q() {
	local s=${1//\'/\'\\\'\'}
	printf "'%s'" "$s"
}

{
	echo '# armdev: rcfile of the interactive dev shell: your ~/.bashrc, then the dev shell.'
	echo '[ -f ~/.bashrc ] && . ~/.bashrc'
	printf '. %s\n' "$(q "$dir/$key.env")"
	printf 'cd %s 2>/dev/null\n' "$(q "$project")"
} >"$work/bashrc" &&
	mv -f "$work/bashrc" "$dir/$key.bashrc" &&
	mv -f "$work/env" "$dir/$key.env" || exit 1

# One project, one dev shell: the other keys' environments and roots go.
for f in "$dir"/*; do
	case ${f##*/} in
	"$key".*) ;;
	*) rm -rf "$f" ;;
	esac
done
exit 0
