"""The MITRE ATT&CK techniques Vigil's rules name, pinned to ATT&CK v18.1 (Enterprise).

A small data table, not the whole matrix: id, name, tactics and the STIX id of the
``attack-pattern`` object in MITRE's own bundle (``enterprise-attack-18.1.json``), so alerts,
incidents and STIX exports refer to the same objects other tools do.
"""

from __future__ import annotations

from dataclasses import dataclass

ATTACK_VERSION = "18.1"
ATTACK_DOMAIN = "enterprise-attack"


@dataclass(frozen=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]
    stix_id: str

    @property
    def url(self) -> str:
        return "https://attack.mitre.org/techniques/" + self.id.replace(".", "/") + "/"


def _t(tid: str, name: str, tactics: str, stix: str) -> Technique:
    return Technique(tid, name, tuple(tactics.split()), "attack-pattern--" + stix)


TECHNIQUES: dict[str, Technique] = {t.id: t for t in (
    _t("T1037.004", "Boot or Logon Initialization Scripts: RC Scripts",
       "persistence privilege-escalation", "dca670cf-eeec-438f-8185-fd959d9ef211"),
    _t("T1046", "Network Service Discovery", "discovery", "e3a12395-188d-4051-9a16-ea8e14d07b88"),
    _t("T1053.003", "Scheduled Task/Job: Cron", "execution persistence privilege-escalation",
       "2acf44aa-542f-4366-b4eb-55ef5747759c"),
    _t("T1055", "Process Injection", "defense-evasion privilege-escalation",
       "43e7dc91-05b2-474c-b9ac-2ed4fe101f4d"),
    _t("T1059.004", "Command and Scripting Interpreter: Unix Shell", "execution",
       "a9d4b653-6915-42af-98b2-5758c4ceee56"),
    _t("T1068", "Exploitation for Privilege Escalation", "privilege-escalation",
       "b21c3b2d-02e6-45b1-980b-e69051040839"),
    _t("T1070.002", "Indicator Removal: Clear Linux or Mac System Logs", "defense-evasion",
       "2bce5b30-7014-4a5d-ade7-12913fe6ac36"),
    _t("T1070.003", "Indicator Removal: Clear Command History", "defense-evasion",
       "3aef9463-9a7a-43ba-8957-a867e07c1e6a"),
    _t("T1078", "Valid Accounts", "defense-evasion persistence privilege-escalation initial-access",
       "b17a1a56-e99c-403c-8948-561df0cffe81"),
    _t("T1095", "Non-Application Layer Protocol", "command-and-control",
       "c21d5a77-d422-4a69-acd7-2c53c1faa34b"),
    _t("T1098.004", "Account Manipulation: SSH Authorized Keys", "persistence privilege-escalation",
       "6b57dc31-b814-4a03-8706-28bc20d739c4"),
    _t("T1110.001", "Brute Force: Password Guessing", "credential-access",
       "09c4c11e-4fa1-4f8c-8dad-3cf8e69ad119"),
    _t("T1110.003", "Brute Force: Password Spraying", "credential-access",
       "692074ae-bb62-4a5e-a735-02cb6bde458c"),
    _t("T1219", "Remote Access Tools", "command-and-control", "4061e78c-1284-44b4-9116-73e4ac3912f7"),
    _t("T1543.002", "Create or Modify System Process: Systemd Service",
       "persistence privilege-escalation", "0fff2797-19cb-41ea-a5f1-8a9303b8158e"),
    _t("T1546.004", "Event Triggered Execution: Unix Shell Configuration Modification",
       "privilege-escalation persistence", "b63a34e8-0a61-4c97-a23b-bf8a2ed812e2"),
    _t("T1552.001", "Unsecured Credentials: Credentials In Files", "credential-access",
       "837f9164-50af-4ac0-8219-379d8a74cefc"),
    _t("T1562.001", "Impair Defenses: Disable or Modify Tools", "defense-evasion",
       "ac08589e-ee59-4935-8667-d845e38fe579"),
    _t("T1562.003", "Impair Defenses: Impair Command History Logging", "defense-evasion",
       "8f504411-cb96-4dac-a537-8d2bb7679c59"),
    _t("T1571", "Non-Standard Port", "command-and-control", "b18eae87-b469-4e14-b454-b171b416bc18"),
    _t("T1574.006", "Hijack Execution Flow: Dynamic Linker Hijacking",
       "persistence privilege-escalation defense-evasion", "633a100c-b2c9-41bf-9be5-905c1b16c825"),
)}

#: Tactics in the order an intrusion unfolds, as the paper's case study tells it: guessing a
#: password (credential access) comes before the login it buys (initial access), and the
#: escalation before the persistence planted with root's rights.
KILL_CHAIN = (
    "reconnaissance",
    "resource-development",
    "credential-access",
    "initial-access",
    "execution",
    "privilege-escalation",
    "persistence",
    "defense-evasion",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
)

TACTIC_NAMES = {tactic: tactic.replace("-", " ").title().replace("And", "and") for tactic in KILL_CHAIN}


def technique(tid: str) -> Technique:
    """The technique ``tid``; KeyError names the table to extend."""
    try:
        return TECHNIQUES[tid]
    except KeyError:
        raise KeyError(f"{tid} is not in vigil.server.detect.attack.TECHNIQUES") from None


def kill_chain_order(tactics: set[str] | list[str]) -> list[str]:
    """``tactics`` sorted in kill-chain order (unknown ones last, alphabetically)."""
    rank = {tactic: i for i, tactic in enumerate(KILL_CHAIN)}
    return sorted(set(tactics), key=lambda t: (rank.get(t, len(KILL_CHAIN)), t))
