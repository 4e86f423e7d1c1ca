//! Starting, driving (kill, pause, resume, restart) and detaching a [`Fleet`], and
//! killing its sshd servers when it is dropped.

use super::*;

impl Fleet {
    /// Generates keys and configs in `opts.dir`, starts one sshd per host and waits until
    /// all accept connections.
    pub fn start(opts: FleetOptions) -> Result<Fleet> {
        let plan = plan_hosts(&opts.layout)?;
        let sshd = find_sshd(opts.sshd.as_deref())?;
        let keygen = find_in_path("ssh-keygen", &["/usr/bin/ssh-keygen", "/bin/ssh-keygen"])
            .ok_or_else(|| anyhow!(INSTALL_KEYGEN))?;
        let user = current_user()?;

        fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let dir = fs::canonicalize(&opts.dir)
            .with_context(|| format!("resolving {}", opts.dir.display()))?;
        refuse_running_lab(&dir)?;
        for sub in ["hosts", "logs", "run"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }

        let host_key = dir.join("ssh_host_ed25519_key");
        let identity_file = dir.join("id_ed25519");
        generate_keys(
            &keygen,
            &[
                (&host_key, "pony-lab-host"),
                (&identity_file, "pony-lab-user"),
            ],
        )?;
        let authorized_keys = dir.join("authorized_keys");
        let user_pub = read(&pub_path(&identity_file))?;
        write_file(&authorized_keys, user_pub.as_bytes(), 0o600)?;

        let sshd_config = dir.join("sshd_config");
        write_file(
            &sshd_config,
            sshd_config_text(opts.port, &host_key, &authorized_keys).as_bytes(),
            0o600,
        )?;
        // `sshd -t` checks the privilege separation folder too, so it must exist first.
        ensure_privsep_dir()?;
        check_sshd_config(&sshd, &sshd_config)?;

        let mut fleet = Fleet {
            ssh_config: dir.join("ssh_config"),
            known_hosts: dir.join("known_hosts"),
            identity_file,
            sshd_config,
            sshd,
            user,
            port: opts.port,
            inventory_name: opts.inventory_name,
            index: HashMap::new(),
            hosts: Vec::with_capacity(plan.len()),
            procs: Vec::with_capacity(plan.len()),
            paused: vec![false; plan.len()],
            dir,
        };
        let mut addresses = AddressPool::new(opts.port);
        for (i, p) in plan.into_iter().enumerate() {
            let root = fleet.dir.join("hosts").join(&p.name);
            fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
            let address = addresses.next()?;
            fleet.index.insert(p.name.clone(), i);
            fleet.hosts.push(LabHost {
                name: p.name,
                region: p.region,
                cluster: p.cluster,
                roles: p.roles,
                address,
                port: opts.port,
                pid: 0,
                root,
            });
            fleet.procs.push(None);
        }

        // Start everything first, then wait for everything: 200 hosts start in parallel.
        for i in 0..fleet.hosts.len() {
            fleet.spawn(i)?;
        }
        let all: Vec<usize> = (0..fleet.hosts.len()).collect();
        fleet.wait_ready(&all, Some(&mut addresses))?;

        fleet.write_client_files()?;
        Ok(fleet)
    }

    /// The fleet's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port every sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The client config: `ssh -F <this> <address>` reaches a host.
    pub fn ssh_config_path(&self) -> &Path {
        &self.ssh_config
    }

    /// The user's private key.
    pub fn identity_file(&self) -> &Path {
        &self.identity_file
    }

    /// The known_hosts file listing every host.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// The server config every sshd runs with.
    pub fn sshd_config_path(&self) -> &Path {
        &self.sshd_config
    }

    /// Every host, in layout order.
    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    /// The host named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&LabHost> {
        self.index.get(name).map(|&i| &self.hosts[i])
    }

    /// The host named `name`.
    ///
    /// # Panics
    /// If the fleet has no such host (use [`Fleet::get`] to ask).
    pub fn host(&self, name: &str) -> &LabHost {
        self.get(name)
            .unwrap_or_else(|| panic!("no host named {name:?} in this lab fleet"))
    }

    /// Whether the host's sshd runs, is paused or is down.
    pub fn state(&self, name: &str) -> Result<HostState> {
        let i = self.lookup(name)?;
        Ok(match (&self.procs[i], self.paused[i]) {
            (None, _) => HostState::Down,
            (Some(_), true) => HostState::Paused,
            (Some(_), false) => HostState::Running,
        })
    }

    /// Crashes a host: SIGKILLs its sshd and every process it started (open sessions
    /// included) and waits until they are gone. A host already down is left alone.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let i = self.lookup(name)?;
        self.kill_index(i);
        Ok(())
    }

    /// Freezes a host: SIGSTOPs its sshd and every process it started. New connections hang
    /// (the kernel still completes the TCP handshake, but no SSH banner comes) and open
    /// sessions stall, until [`Fleet::resume`].
    pub fn pause(&mut self, name: &str) -> Result<()> {
        let i = self.lookup(name)?;
        let Some(child) = &self.procs[i] else {
            bail!("cannot pause {name}: its sshd is down");
        };
        process::freeze_trees(&[child.id()]);
        self.paused[i] = true;
        Ok(())
    }

    /// Unfreezes a host paused by [`Fleet::pause`] (SIGCONT to its sshd and its processes).
    pub fn resume(&mut self, name: &str) -> Result<()> {
        let i = self.lookup(name)?;
        let Some(child) = &self.procs[i] else {
            bail!("cannot resume {name}: its sshd is down");
        };
        process::thaw_trees(&[child.id()]);
        self.paused[i] = false;
        Ok(())
    }

    /// Brings a host back: kills its sshd if it runs, starts a new one on the same address
    /// and waits until it accepts connections.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let i = self.lookup(name)?;
        self.kill_index(i);
        self.spawn(i)?;
        self.wait_ready(&[i], None)
    }

    /// Writes a pony inventory (SPEC §2) for the fleet: `defaults.ssh` points at the fleet's
    /// ssh_config, port and user; regions → clusters (with their roles) → hosts, each with
    /// its `address` and vars `root` and `mail_root` (`<root>/srv/mail`).
    pub fn write_inventory(&self, path: impl AsRef<Path>) -> Result<()> {
        write_inventory_file(
            path.as_ref(),
            &self.inventory_name,
            &self.ssh_config,
            self.port,
            &self.user,
            &self.hosts,
        )
    }

    /// Leaves the sshd servers running, writes `<dir>/lab.json` (hosts and pids) for
    /// [`down`], and forgets them: dropping the result kills nothing.
    pub fn detach(mut self) -> Result<LabState> {
        let state = LabState {
            dir: self.dir.clone(),
            inventory_name: self.inventory_name.clone(),
            port: self.port,
            user: self.user.clone(),
            sshd_config: self.sshd_config.clone(),
            ssh_config: self.ssh_config.clone(),
            identity_file: self.identity_file.clone(),
            known_hosts: self.known_hosts.clone(),
            hosts: self.hosts.clone(),
            pids: self
                .hosts
                .iter()
                .zip(&self.procs)
                .filter_map(|(h, c)| c.as_ref().map(|c| (h.name.clone(), c.id())))
                .collect(),
        };
        let json = serde_json::to_string_pretty(&state)?;
        // On failure `self` drops here and kills the fleet: nothing is left untracked.
        write_file(&self.dir.join(STATE_FILE), json.as_bytes(), 0o644)?;
        // Dropping a std Child neither kills nor waits: the servers keep running.
        self.procs.iter_mut().for_each(|c| drop(c.take()));
        Ok(state)
    }

    fn lookup(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("no host named {name:?} in this lab fleet"))
    }

    fn pid_path(&self, i: usize) -> PathBuf {
        self.dir
            .join("run")
            .join(format!("{}.pid", self.hosts[i].name))
    }

    /// Whether host `i`'s sshd listens. sshd writes its PidFile right after binding and
    /// listening, so "the pid file holds the pid we started" means a connection now
    /// succeeds. This is checked instead of a probe connection, which would make sshd fork
    /// and re-execute itself (as much work as starting it) only to log
    /// `kex_exchange_identification: Connection closed by remote host` at level ERROR.
    fn is_listening(&self, i: usize) -> bool {
        let Some(child) = &self.procs[i] else {
            return false;
        };
        fs::read_to_string(self.pid_path(i)).ok().and_then(|s| {
            s.strip_suffix('\n')
                .and_then(|s| s.trim().parse::<u32>().ok())
        }) == Some(child.id())
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", self.hosts[i].name))
    }

    /// Starts host `i`'s sshd (not waiting for it).
    fn spawn(&mut self, i: usize) -> Result<()> {
        let h = &self.hosts[i];
        let log_path = self.log_path(i);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let pid_file = self.pid_path(i);
        // A stale pid file would pass for readiness.
        match fs::remove_file(&pid_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", pid_file.display())),
        }
        let child = Command::new(&self.sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.sshd_config)
            .arg("-o")
            .arg(format!("ListenAddress={}:{}", h.address, h.port))
            .arg("-o")
            .arg(format!(
                "PidFile={}",
                quote(&pid_file.display().to_string())
            ))
            .arg("-o")
            // The first SetEnv wins, so this replaces the config's `SetEnv SHLVL=1`.
            .arg(format!(
                "SetEnv=SHLVL=1 PONY_LAB_HOST={} PONY_LAB_ROOT={}",
                quote(&h.name),
                quote(&h.root.display().to_string())
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.sshd.display()))?;
        self.hosts[i].pid = child.id();
        self.procs[i] = Some(child);
        self.paused[i] = false;
        Ok(())
    }

    /// Waits until the sshd of every host in `which` listens. With a pool,
    /// a server that died because its address was taken meanwhile (another test process)
    /// is moved to a fresh address and started again.
    fn wait_ready(&mut self, which: &[usize], mut pool: Option<&mut AddressPool>) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<usize> = which.to_vec();
        let mut respawns: HashMap<usize, usize> = HashMap::new();
        while !pending.is_empty() {
            let mut still = Vec::with_capacity(pending.len());
            for i in pending {
                let exited = match self.procs[i].as_mut() {
                    Some(child) => child.try_wait()?,
                    None => bail!("sshd of {} is not running", self.hosts[i].name),
                };
                if let Some(status) = exited {
                    self.procs[i] = None;
                    let log = fs::read_to_string(self.log_path(i)).unwrap_or_default();
                    let taken = log.contains("Address already in use")
                        || log.contains("Cannot bind any address");
                    let tries = respawns.entry(i).or_insert(0);
                    if let (true, Some(pool)) = (taken, pool.as_deref_mut()) {
                        if *tries < MAX_RESPAWNS {
                            *tries += 1;
                            self.hosts[i].address = pool.next()?;
                            fs::write(self.log_path(i), b"")?;
                            self.spawn(i)?;
                            still.push(i);
                            continue;
                        }
                    }
                    bail!(
                        "sshd of {} ({}) exited with {status}:\n{}",
                        self.hosts[i].name,
                        self.hosts[i].socket_addr(),
                        log.trim_end()
                    );
                }
                if !self.is_listening(i) {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<&str> = pending
                    .iter()
                    .take(10)
                    .map(|&i| self.hosts[i].name.as_str())
                    .collect();
                bail!(
                    "{} sshd server(s) not accepting connections after {:?}: {} (logs in {})",
                    pending.len(),
                    READY_TIMEOUT,
                    names.join(", "),
                    self.dir.join("logs").display()
                );
            }
            std::thread::sleep(READY_STEP);
        }
        Ok(())
    }

    /// Writes known_hosts and ssh_config (once the addresses are final).
    fn write_client_files(&self) -> Result<()> {
        let host_pub = read(&pub_path(&self.dir.join("ssh_host_ed25519_key")))?;
        let host_pub = host_pub.trim();
        let mut known = String::new();
        for h in &self.hosts {
            let _ = writeln!(known, "[{}]:{} {}", h.address, h.port, host_pub);
        }
        write_file(&self.known_hosts, known.as_bytes(), 0o644)?;

        let mut cfg = String::from("# pony lab client config (generated)\n");
        for h in &self.hosts {
            let _ = writeln!(cfg, "Host {}\n    HostName {}", h.name, h.address);
        }
        let _ = write!(
            cfg,
            "Host *\n    User {user}\n    Port {port}\n    IdentityFile {id}\n    \
             IdentitiesOnly yes\n    UserKnownHostsFile {kh}\n    StrictHostKeyChecking yes\n    \
             KexAlgorithms curve25519-sha256\n    BatchMode yes\n    ConnectTimeout 5\n",
            user = self.user,
            port = self.port,
            id = quote_expanding(&self.identity_file),
            kh = quote_expanding(&self.known_hosts),
        );
        write_file(&self.ssh_config, cfg.as_bytes(), 0o644)
    }

    fn kill_index(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let all = process::kill_trees(&[child.id()]);
            let _ = child.kill();
            let _ = child.wait();
            process::wait_gone(&all[1..], Duration::from_secs(2));
        }
        self.paused[i] = false;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let mut children: Vec<Child> = self.procs.iter_mut().filter_map(Option::take).collect();
        if children.is_empty() {
            return;
        }
        let roots: Vec<u32> = children.iter().map(Child::id).collect();
        let all = process::kill_trees(&roots);
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let below: Vec<u32> = all.into_iter().filter(|p| !roots.contains(p)).collect();
        process::wait_gone(&below, Duration::from_secs(2));
    }
}
