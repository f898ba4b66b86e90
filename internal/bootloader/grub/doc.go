// Package grub installs GRUB from the payload a bootable image ships
// (grub-mkimage and the module directories of grub-efi-amd64-bin and
// grub-pc-bin) without grub-install: it generates grub.cfg from the BLS
// entries ostree wrote, builds BOOTX64.EFI and a BIOS core.img with the
// image's own grub-mkimage, and embeds core.img and boot.img itself.
//
// The image's tools run through a Runner (in bootlace, the sandbox rooted
// at the deployment); nothing here runs a host tool or reads a host file.
// InstallBIOS reproduces grub-bios-setup --no-rs-codes byte for byte; the
// integration tests compare it with the real grub-bios-setup and
// grub-install and boot the result under SeaBIOS and OVMF.
package grub
