# A small NixOS module system: enough to evaluate armdev's share/etc/nixos on
# a host that has Nix but no nixpkgs, and to report what NixOS itself would
# refuse about its users and groups. Called by eval.go as
#   nix-instantiate --eval --strict --json eval.nix --argstr configuration /abs/configuration.nix
#
# What it models, after nixpkgs' lib/modules.nix and
# nixos/modules/config/users-groups.nix:
# - modules are paths, functions or attribute sets, collected through
#   `imports` (each file once); a function gets { config, lib, pkgs, ... }
#   where config is the merged result (lazy);
# - definitions merge recursively: attribute sets by name, lists
#   concatenated, other values must agree; mkIf, mkMerge, mkOverride
#   (mkDefault, mkForce) and mkBefore/mkAfter behave as in NixOS, except that
#   priorities are settled per leaf (NixOS settles them per declared option,
#   which only differs for mkForce on a whole attribute set);
# - what NixOS always declares: root, nobody, the groups of users-groups.nix,
#   the nixbld group and build users, sshd when OpenSSH is on;
# - users-groups.nix's assertions, with their exact messages.
# It has no option declarations: an option nobody defines is absent (or null
# when mkIf discarded every definition, except in the attrsOf options listed
# in attrsOfPaths, where the attribute disappears as in NixOS).
{ configuration }:

let
  inherit (builtins)
    all any attrNames attrValues concatLists concatMap concatStringsSep elem
    filter foldl' functionArgs genericClosure head intersectAttrs isAttrs
    isBool isFunction isInt isList isPath isString length listToAttrs mapAttrs
    match removeAttrs toString typeOf;

  filterAttrs = pred: set:
    listToAttrs (concatMap (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ]) (attrNames set));
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkOrder = priority: content: { _type = "order"; inherit priority content; };

  # lib: the few functions configuration files commonly use.
  lib = {
    inherit mkOverride mkIf mkOrder filterAttrs unique;
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkDefault = mkOverride 1000;
    mkOptionDefault = mkOverride 1500;
    mkImageMediaOverride = mkOverride 60;
    mkForce = mkOverride 50;
    mkVMOverride = mkOverride 10;
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: set: if cond then set else { };
    genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
    range = first: last: if first > last then [ ] else builtins.genList (n: first + n) (last - first + 1);
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
    versionOlder = a: b: builtins.compareVersions a b < 0;
    inherit (builtins) attrNames attrValues concatStringsSep concatLists elem filter
      hasAttr head length mapAttrs toString;
  };

  # pkgs: stand-ins for the packages our files name. They are only forced
  # when something reads them, which the report below does not.
  stub = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  pkgs = lib.genAttrs [ "bashInteractive" "direnv" "git" "nix-direnv" "shadow" "sysbench" "wget" ] stub;

  args = {
    inherit config lib pkgs;
    options = { };
    modulesPath = throw "eval.nix does not provide modulesPath (nixpkgs is not available here)";
  };

  # call applies a module function to the arguments it names (all of them
  # when it names none, as `{ ... }:` does).
  call = f:
    let wanted = functionArgs f;
    in f (if wanted == { } then args else intersectAttrs wanted args);

  load = key: m:
    let
      isFile = isPath m || isString m;
      file = if isFile then toString m else key;
      value = if isFile then import m else m;
      body = if isFunction value then call value else value;
    in
    {
      key = file;
      inherit file;
      imports = body.imports or [ ];
      defs =
        if body ? config || body ? options then body.config or { }
        else removeAttrs body [ "imports" "_file" "key" "disabledModules" "meta" ];
    };

  # What NixOS always declares (users-groups.nix, nix-daemon.nix, sshd.nix).
  nixos = {
    key = "<nixos>";
    file = "<nixos>";
    imports = [ ];
    defs.users = {
      users = {
        root = {
          uid = 0;
          description = "System administrator";
          home = "/root";
          shell = lib.mkDefault defaultUserShell;
          group = "root";
        };
        nobody = {
          uid = 65534;
          isSystemUser = true;
          description = "Unprivileged account (don't use!)";
          group = "nogroup";
        };
      }
      # nix-daemon.nix: nrBuildUsers defaults to max 32 max-jobs, or 0
      # with auto-allocate-uids.
      // listToAttrs (map
        (n: {
          name = "nixbld${toString n}";
          value = {
            uid = 30000 + n;
            isSystemUser = true;
            group = "nixbld";
            extraGroups = [ "nixbld" ];
          };
        })
        (lib.range 1 nrBuildUsers))
      // lib.optionalAttrs ((config.services.openssh.enable or false) == true) {
        sshd = {
          isSystemUser = true;
          group = "sshd";
          description = "SSH privilege separation user";
        };
      };
      groups = mapAttrs (_: gid: { inherit gid; }) {
        root = 0;
        wheel = 1;
        disk = 6;
        kmem = 2;
        tty = 3;
        floppy = 18;
        uucp = 19;
        lp = 20;
        cdrom = 24;
        tape = 25;
        audio = 17;
        video = 26;
        dialout = 27;
        nogroup = 65534;
        users = 100;
        nixbld = 30000;
        utmp = 29;
        adm = 55;
        input = 174;
        kvm = 302;
        render = 303;
        sgx = 304;
        shadow = 318;
      } // lib.optionalAttrs ((config.services.openssh.enable or false) == true) { sshd = { }; };
    };
  };

  nrBuildUsers =
    let
      settings = config.nix.settings or { };
      maxJobs = settings.max-jobs or "auto";
    in
    config.nix.nrBuildUsers or (
      if settings.auto-allocate-uids or false then 0
      else if builtins.isInt maxJobs && maxJobs > 32 then maxJobs
      else 32);

  modules = genericClosure {
    startSet = [ nixos (load "<configuration>" (/. + configuration)) ];
    operator = item:
      builtins.genList (i: load "${item.key}:import-${toString i}" (builtins.elemAt item.imports i)) (length item.imports);
  };

  typeIs = t: v: isAttrs v && (v._type or null) == t;
  isPlainAttrs = v: isAttrs v && !(v ? _type) && (v.type or null) != "derivation";

  # pushDown moves properties around an attribute set onto its attributes,
  # as lib.modules' pushDownProperties does, so that the set's names are
  # known without evaluating an mkIf condition (which may read config).
  pushDown = v:
    if typeIs "merge" v then concatMap pushDown v.contents
    else if typeIs "if" v then map (c: if isPlainAttrs c then mapAttrs (_: mkIf v.condition) c else mkIf v.condition c) (pushDown v.content)
    else if typeIs "override" v then map (c: if isPlainAttrs c then mapAttrs (_: mkOverride v.priority) c else mkOverride v.priority c) (pushDown v.content)
    else if typeIs "order" v then pushDown v.content
    else [ v ];

  # discharge evaluates a leaf definition's conditions and priority; the
  # outermost override counts, and 100 is the priority of a plain value.
  discharge = prio: v:
    if typeIs "merge" v then concatMap (discharge prio) v.contents
    else if typeIs "if" v then (if v.condition then discharge prio v.content else [ ])
    else if typeIs "override" v then discharge (if prio == null then v.priority else prio) v.content
    else if typeIs "order" v then discharge prio v.content
    else [ { prio = if prio == null then 100 else prio; value = v; } ];

  show = v:
    if isString v then "\"${v}\""
    else if isInt v then toString v
    else if isBool v then (if v then "true" else "false")
    else if v == null then "null"
    else "a ${typeOf v}";

  # attrsOfPaths are options NixOS declares as attrsOf: there an attribute
  # whose definitions mkIf all discarded does not exist (users.users.x =
  # mkIf false …  declares no user). Elsewhere names are kept without
  # evaluating conditions, which may read config (NixOS knows those names
  # from option declarations, which this evaluator does not have).
  attrsOfPaths = [ [ "users" "users" ] [ "users" "groups" ] [ "fileSystems" ] [ "environment" "variables" ] ];
  defined = defs: any (d: discharge null d != [ ]) defs;

  merge = path: defs:
    let
      pushed = concatMap pushDown defs;
      defsOf = n: concatMap (d: if d ? ${n} then [ d.${n} ] else [ ]) pushed;
      names = attrNames (foldl' (acc: d: acc // d) { } pushed);
    in
    if pushed != [ ] && all isPlainAttrs pushed then
      listToAttrs (map
        (n: { name = n; value = merge (path ++ [ n ]) (defsOf n); })
        (if elem path attrsOfPaths then filter (n: defined (defsOf n)) names else names))
    else mergeLeaf path pushed;

  mergeLeaf = path: defs:
    let
      discharged = concatMap (discharge null) defs;
      best = foldl' (m: d: if m == null || d.prio < m then d.prio else m) null discharged;
      values = map (d: d.value) (filter (d: d.prio == best) discharged);
    in
    if values == [ ] then null
    else if all isList values then concatLists values
    else if all isPlainAttrs values then merge path values
    else if all (v: v == head values) values then head values
    else throw "The option `${concatStringsSep "." path}' has conflicting definition values: ${concatStringsSep ", " (map show values)}";

  config = merge [ ] (map (m: m.defs) modules);

  # ---- users and groups, as users-groups.nix sees them -------------------

  defaultUserShell = "/run/current-system/sw/bin/bash";
  cfg = config.users or { };
  orDefault = set: name: default: if set ? ${name} && set.${name} != null then set.${name} else default;
  mutableUsers = orDefault cfg "mutableUsers" true;
  allowNoPasswordLogin = orDefault cfg "allowNoPasswordLogin" false;
  enforceIdUniqueness = orDefault cfg "enforceIdUniqueness" true;

  # withDefaults applies userOpts' defaults and its isNormalUser and
  # !mutableUsers rules (all mkDefault there: any definition wins).
  withDefaults = attr: u:
    let
      name = orDefault u "name" attr;
      isNormalUser = orDefault u "isNormalUser" false;
      useDefaultShell = orDefault u "useDefaultShell" isNormalUser;
      initialPassword = orDefault u "initialPassword" null;
      initialHashedPassword = orDefault u "initialHashedPassword" null;
      keys = u.openssh.authorizedKeys.keys or null;
      keyFiles = u.openssh.authorizedKeys.keyFiles or null;
    in
    {
      inherit name isNormalUser useDefaultShell initialPassword initialHashedPassword;
      uid = orDefault u "uid" null;
      isSystemUser = orDefault u "isSystemUser" false;
      group = orDefault u "group" (if isNormalUser then "users" else "");
      extraGroups = orDefault u "extraGroups" [ ];
      home = orDefault u "home" (if isNormalUser then "/home/${name}" else "/var/empty");
      createHome = orDefault u "createHome" isNormalUser;
      shell =
        if u ? shell then u.shell
        else if useDefaultShell then defaultUserShell
        else "/run/current-system/sw/bin/nologin";
      hashedPassword = orDefault u "hashedPassword" (if mutableUsers then null else initialHashedPassword);
      password = orDefault u "password" (if mutableUsers then null else initialPassword);
      hashedPasswordFile = orDefault u "hashedPasswordFile" null;
      authorizedKeys = if keys == null then [ ] else keys;
      authorizedKeyFiles = if keyFiles == null then [ ] else keyFiles;
    };

  users = mapAttrs withDefaults (cfg.users or { });
  groups = mapAttrs (attr: g: { name = orDefault g "name" attr; gid = orDefault g "gid" null; }) (cfg.groups or { });

  # duplicates lists "Duplicate uid N" for every id used more than once, as
  # users-groups.nix's idsAreUnique traces (it stops at the first).
  duplicates = what: ids:
    let counts = foldl' (acc: id: acc // { ${toString id} = (acc.${toString id} or 0) + 1; }) { } ids;
    in map (id: "Duplicate ${what} ${id}") (filter (id: counts.${id} > 1) (attrNames counts));
  uidDuplicates = duplicates "uid" (map (u: u.uid) (filter (u: u.uid != null) (attrValues users)));
  gidDuplicates = duplicates "gid" (map (g: g.gid) (filter (g: g.gid != null) (attrValues groups)));

  groupNames = map (g: g.name) (attrValues groups);
  usersWithoutExistingGroup = filterAttrs (n: u: u.group != "" && !elem u.group groupNames) users;
  usersWithNullShells = attrNames (filterAttrs (n: u: u.shell == null) users);

  allowsLogin = hash: hash == "" || !(elem hash [ null "!" "!!" "*" ]);
  nameRegex = "[a-zA-Z0-9_.][a-zA-Z0-9_.-]*";

  # The assertions of users-groups.nix (the systemd-initrd, lingering and
  # shell-program ones do not apply here), messages copied verbatim.
  assertions = [
    {
      assertion = !enforceIdUniqueness || (uidDuplicates == [ ] && gidDuplicates == [ ]);
      message = "UIDs and GIDs must be unique!";
    }
    {
      assertion = usersWithoutExistingGroup == { };
      message =
        let
          errUsers = attrNames usersWithoutExistingGroup;
          missingGroups = unique (map (u: u.group) (attrValues usersWithoutExistingGroup));
          mkConfigHint = group: "users.groups.${group} = {};";
        in
        ''
          The following users have a primary group that is undefined: ${concatStringsSep " " errUsers}
          Hint: Add this to your NixOS configuration:
            ${concatStringsSep "\n  " (map mkConfigHint missingGroups)}
        '';
    }
    {
      assertion = !mutableUsers -> length usersWithNullShells == 0;
      message = ''
        users.mutableUsers = false has been set,
        but found users that have their shell set to null.
        If you wish to disable login, set their shell to pkgs.shadow (the default).
        Misconfigured users: ${concatStringsSep " " usersWithNullShells}
      '';
    }
    {
      assertion =
        !mutableUsers
        -> !allowNoPasswordLogin
        -> any (u:
          (u.name == "root" || u.group == "wheel" || elem "wheel" u.extraGroups)
          && (
            allowsLogin u.hashedPassword
            || u.password != null
            || u.hashedPasswordFile != null
            || u.authorizedKeys != [ ]
            || u.authorizedKeyFiles != [ ]
          )) (attrValues users);
      message = ''
        Neither the root account nor any wheel user has a password or SSH authorized key.
        You must set one to prevent being locked out of your system.
        If you really want to be locked out of your system, set users.allowNoPasswordLogin = true;
        However you are most probably better off by setting users.mutableUsers = true; and
        manually running passwd root to set the root password.
      '';
    }
  ]
  ++ concatMap
    (user: [
      # users-groups.nix aborts evaluation on these two (the option's
      # apply); reported as failed assertions here.
      {
        assertion = builtins.stringLength user.name < 32;
        message = "Username '${user.name}' is longer than 31 characters which is not allowed!";
      }
      {
        assertion = builtins.stringLength user.group < 32;
        message = "Group name '${user.group}' is longer than 31 characters which is not allowed!";
      }
      {
        assertion = match nameRegex user.name != null;
        message = "The username \"${user.name}\" is not valid, it does not match the regex \"${nameRegex}\".";
      }
      {
        assertion = (user.hashedPassword != null) -> (match ".*:.*" user.hashedPassword == null);
        message = ''
          The password hash of user "${user.name}" contains a ":" character.
          This is invalid and would break the login system because the fields
          of /etc/shadow (file where hashes are stored) are colon-separated.
          Please check the value of option `users.users."${user.name}".hashedPassword`.'';
      }
      {
        assertion = user.isNormalUser && user.uid != null -> user.uid >= 1000;
        message = ''
          A user cannot have a users.users.${user.name}.uid set below 1000 and set users.users.${user.name}.isNormalUser.
          Either users.users.${user.name}.isSystemUser must be set to true instead of users.users.${user.name}.isNormalUser
          or users.users.${user.name}.uid must be changed to 1000 or above.
        '';
      }
      {
        assertion =
          let
            isEffectivelySystemUser = user.isSystemUser || (user.uid != null && user.uid < 1000 && !user.isNormalUser);
          in
          isEffectivelySystemUser != user.isNormalUser;
        message = ''
          Exactly one of users.users.${user.name}.isSystemUser and users.users.${user.name}.isNormalUser must be set.
        '';
      }
      {
        assertion = user.group != "";
        message = ''
          users.users.${user.name}.group is unset. This used to default to
          nogroup, but this is unsafe. For example you can create a group
          for this user with:
          users.users.${user.name}.group = "${user.name}";
          users.groups.${user.name} = {};
        '';
      }
    ])
    (attrValues users)
  # The configuration's own assertions, as NixOS checks them too.
  ++ (let a = config.assertions or null; in if a == null then [ ] else a);

  openssh = config.services.openssh or { };
in
{
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) assertions);
  traces = uidDuplicates ++ gidDuplicates;
  users = mapAttrs
    (_: u: {
      inherit (u) name uid isNormalUser isSystemUser group extraGroups home createHome
        useDefaultShell shell hashedPassword authorizedKeys;
    })
    users;
  inherit groups mutableUsers;
  openssh = {
    enable = orDefault openssh "enable" false;
    settings = orDefault openssh "settings" { };
  };
  fileSystems = mapAttrs
    (_: fs: { device = fs.device or null; fsType = fs.fsType; options = orDefault fs "options" [ ]; })
    (filterAttrs (_: fs: (fs.fsType or null) == "9p") (config.fileSystems or { }));
  autologinUser = config.services.getty.autologinUser or null;
  stateVersion = config.system.stateVersion or null;
  variables = config.environment.variables or { };
  nixSettings = config.nix.settings or { };
  wheelNeedsPassword = orDefault (config.security.sudo or { }) "wheelNeedsPassword" true;
}
